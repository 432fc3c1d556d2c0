package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/keel-run/keel/internal/spec"
)

// Kind is the type of value an option takes.
type Kind int

// The kinds of option value.
const (
	String   Kind = iota + 1 // any text
	Int                      // a whole number
	Bool                     // true or false
	Duration                 // 500ms, 3s, 1m, or bare milliseconds
	Size                     // 300M, 1G, or bytes
	List                     // one value or a list; a flag repeats and appends
	Env                      // KEY=VALUE; a flag repeats
)

func (k Kind) String() string {
	switch k {
	case String:
		return "string"
	case Int:
		return "int"
	case Bool:
		return "bool"
	case Duration:
		return "duration"
	case Size:
		return "size"
	case List:
		return "list"
	case Env:
		return "env"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Option describes one app option, shared by CLI flags and config keys.
type Option struct {
	Key   string // config key, snake_case: "kill_timeout"
	Flag  string // CLI flag, kebab-case without dashes: "kill-timeout"
	Short string // one-letter shorthand, or ""
	Kind  Kind
	Usage string
}

// option is an Option with the code that applies a value to an app.
type option struct {
	Option
	// set applies one value given as text, as from a flag: list kinds
	// append (args is split as a shell would); env takes KEY=VALUE.
	set func(a *spec.App, v string) error
	// item applies one element of a list given in a file. nil means set.
	item func(a *spec.App, v string) error
}

// options is the table, in the order help should list it. It is never
// modified; Options returns a copy.
var options = []option{
	{Option: Option{Key: "name", Flag: "name", Short: "n", Kind: String,
		Usage: "app name (default: the script's base name)"},
		set: setString(func(a *spec.App) *string { return &a.Name })},
	{Option: Option{Key: "script", Flag: "script", Kind: String,
		Usage: "script, binary or command to run"},
		set: setString(func(a *spec.App) *string { return &a.Script })},
	{Option: Option{Key: "args", Flag: "args", Kind: List,
		Usage: "arguments for the script; one string is split as a shell would (repeatable)"},
		set: func(a *spec.App, v string) error {
			words, err := splitArgs(v)
			if err != nil {
				return err
			}
			a.Args = append(a.Args, words...)
			return nil
		},
		item: func(a *spec.App, v string) error { a.Args = append(a.Args, v); return nil }},
	{Option: Option{Key: "interpreter", Flag: "interpreter", Kind: String,
		Usage: `program that runs the script (default: node for .js/.mjs/.cjs, python3 for .py; "none" runs it directly)`},
		set: setString(func(a *spec.App) *string { return &a.Interpreter })},
	{Option: Option{Key: "interpreter_args", Flag: "interpreter-args", Kind: List,
		Usage: "arguments for the interpreter, e.g. node's flags; one string is split as a shell would (repeatable)"},
		set: func(a *spec.App, v string) error {
			words, err := splitArgs(v)
			if err != nil {
				return err
			}
			a.InterpreterArgs = append(a.InterpreterArgs, words...)
			return nil
		},
		item: func(a *spec.App, v string) error { a.InterpreterArgs = append(a.InterpreterArgs, v); return nil }},
	{Option: Option{Key: "cwd", Flag: "cwd", Kind: String,
		Usage: "working directory (default: the config file's directory, or the current one)"},
		set: setString(func(a *spec.App) *string { return &a.Cwd })},
	{Option: Option{Key: "env", Flag: "env", Kind: Env,
		Usage: "environment variable KEY=VALUE (repeatable)"},
		set: func(a *spec.App, v string) error {
			k, val, err := parseEnv(v)
			if err != nil {
				return err
			}
			setEnv(a, k, val)
			return nil
		}},
	{Option: Option{Key: "instances", Flag: "instances", Short: "i", Kind: Int,
		Usage: `number of instances, or "max" for one per CPU (default 1)`},
		set: func(a *spec.App, v string) error {
			n, err := parseInstances(v)
			return assign(&a.Instances, n, err)
		}},
	{Option: Option{Key: "min_ready", Flag: "min-ready", Kind: Int,
		Usage: "instances that must be ready for the app to count as ready in keel run's /readyz (default: all)"},
		set: setInt(func(a *spec.App) *int { return &a.MinReady })},
	{Option: Option{Key: "cluster", Flag: "cluster", Kind: Bool,
		Usage: "cluster mode (pm2's exec_mode cluster): share the ports a Node app listens on between its instances"},
		set: setBool(func(a *spec.App) *bool { return &a.Cluster })},
	{Option: Option{Key: "listen", Flag: "listen", Kind: List,
		Usage: "socket keel owns and shares with every instance: :3000, 127.0.0.1:3000, tcp://…, unix:///path (repeatable)"},
		set: appendString(func(a *spec.App) *[]string { return &a.Listen })},
	{Option: Option{Key: "ready", Flag: "ready", Kind: String,
		Usage: "when an instance is ready: notify, message, listen, tcp://host:port, http://host:port/path or none"},
		set: setString(func(a *spec.App) *string { return &a.Ready })},
	{Option: Option{Key: "ready_timeout", Flag: "ready-timeout", Kind: Duration,
		Usage: "how long an instance may take to become ready (default 30s)"},
		set: setDuration(func(a *spec.App) *spec.Duration { return &a.ReadyTimeout })},
	{Option: Option{Key: "kill_signal", Flag: "kill-signal", Kind: String,
		Usage: "signal that asks an instance to stop (default SIGTERM)"},
		set: setString(func(a *spec.App) *string { return &a.KillSignal })},
	{Option: Option{Key: "kill_timeout", Flag: "kill-timeout", Kind: Duration,
		Usage: "how long to wait after the stop signal before SIGKILL (default 5s)"},
		set: setDuration(func(a *spec.App) *spec.Duration { return &a.KillTimeout })},
	{Option: Option{Key: "restart", Flag: "restart", Kind: String,
		Usage: "restart policy: always, on-failure or never (default always)"},
		set: setString(func(a *spec.App) *string { return &a.Restart })},
	{Option: Option{Key: "stop_exit_codes", Flag: "stop-exit-codes", Kind: List,
		Usage: "exit codes that never restart (repeatable, or comma-separated)"},
		set: func(a *spec.App, v string) error {
			for _, f := range strings.Split(v, ",") {
				c, err := parseExitCode(f)
				if err != nil {
					return err
				}
				a.StopExitCodes = append(a.StopExitCodes, c)
			}
			return nil
		},
		item: func(a *spec.App, v string) error {
			c, err := parseExitCode(v)
			if err != nil {
				return err
			}
			a.StopExitCodes = append(a.StopExitCodes, c)
			return nil
		}},
	{Option: Option{Key: "min_uptime", Flag: "min-uptime", Kind: Duration,
		Usage: "a run shorter than this counts as unstable (default 1s)"},
		set: setDuration(func(a *spec.App) *spec.Duration { return &a.MinUptime })},
	{Option: Option{Key: "max_restarts", Flag: "max-restarts", Kind: Int,
		Usage: "unstable runs in a row before the app is errored (default 15)"},
		set: setInt(func(a *spec.App) *int { return &a.MaxRestarts })},
	{Option: Option{Key: "restart_delay", Flag: "restart-delay", Kind: Duration,
		Usage: "first delay of the exponential backoff between unstable restarts (default 100ms)"},
		set: setDuration(func(a *spec.App) *spec.Duration { return &a.RestartDelay })},
	{Option: Option{Key: "backoff_max", Flag: "backoff-max", Kind: Duration,
		Usage: "longest delay between unstable restarts (default 30s)"},
		set: setDuration(func(a *spec.App) *spec.Duration { return &a.BackoffMax })},
	{Option: Option{Key: "max_memory", Flag: "max-memory", Kind: Size,
		Usage: "restart an instance whose memory (RSS) passes this, e.g. 300M, 1G"},
		set: func(a *spec.App, v string) error {
			s, err := parseSize(v)
			return assign(&a.MaxMemory, s, err)
		}},
	{Option: Option{Key: "cron_restart", Flag: "cron-restart", Short: "c", Kind: String,
		Usage: `restart on a cron schedule, e.g. "0 3 * * *"`},
		set: setString(func(a *spec.App) *string { return &a.CronRestart })},
	{Option: Option{Key: "watch", Flag: "watch", Short: "w", Kind: List,
		Usage: `path to watch; restart on change ("true": the app's cwd) (repeatable)`},
		set: func(a *spec.App, v string) error {
			switch v {
			case "true":
				a.Watch = append(a.Watch, ".")
			case "false":
				a.Watch = nil
			default:
				a.Watch = append(a.Watch, v)
			}
			return nil
		},
		item: appendString(func(a *spec.App) *[]string { return &a.Watch })},
	{Option: Option{Key: "watch_ignore", Flag: "watch-ignore", Kind: List,
		Usage: "path or pattern that watch ignores (repeatable)"},
		set: appendString(func(a *spec.App) *[]string { return &a.WatchIgnore })},
	{Option: Option{Key: "health_url", Flag: "health-url", Kind: String,
		Usage: "http(s) URL to probe; restart after health_failures failures in a row"},
		set: setString(func(a *spec.App) *string { return &a.HealthURL })},
	{Option: Option{Key: "health_interval", Flag: "health-interval", Kind: Duration,
		Usage: "time between health probes (default 10s)"},
		set: setDuration(func(a *spec.App) *spec.Duration { return &a.HealthInterval })},
	{Option: Option{Key: "health_failures", Flag: "health-failures", Kind: Int,
		Usage: "failed health probes in a row that restart an instance (default 3)"},
		set: setInt(func(a *spec.App) *int { return &a.HealthFailures })},
	{Option: Option{Key: "on_crash", Flag: "on-crash", Kind: String,
		Usage: "command (crash report JSON on stdin) or http(s) URL to notify of a crash"},
		set: setString(func(a *spec.App) *string { return &a.OnCrash })},
	{Option: Option{Key: "graceful_crash", Flag: "graceful-crash", Kind: Bool,
		Usage: "on a fatal error, a Node app finishes its requests in flight while its replacement starts (default true)"},
		set: func(a *spec.App, v string) error {
			b, err := parseBool(v)
			if err == nil {
				a.GracefulCrash = &b
			}
			return err
		}},
	{Option: Option{Key: "log_max_size", Flag: "log-max-size", Kind: Size,
		Usage: "rotate a log file at this size (default 10M)"},
		set: func(a *spec.App, v string) error {
			s, err := parseSize(v)
			return assign(&a.LogMaxSize, s, err)
		}},
	{Option: Option{Key: "log_keep", Flag: "log-keep", Kind: Int,
		Usage: "rotated log files to keep (default 5)"},
		set: setInt(func(a *spec.App) *int { return &a.LogKeep })},
}

// Options returns every app option, in the order help should list them.
// The slice is the caller's to keep.
//
// Every value reaches Set as text, whatever its Kind, so a CLI should
// register each option as a string flag and hand what it gets to Set: Int
// options may take words (instances takes "max"), Bool options want a
// no-value default of "true" (--cluster), List and Env options repeat
// (--listen :3000 --listen :3001; --env A=1 --env B=2), and watch with no
// value should give "true" (watch the app's cwd), as pm2's --watch does.
func Options() []Option {
	out := make([]Option, len(options))
	for i, o := range options {
		out[i] = o.Option
	}
	return out
}

// lookup finds an option by config key or flag name ("kill_timeout",
// "kill-timeout" or "--kill-timeout").
func lookup(name string) (*option, bool) {
	name = strings.TrimLeft(name, "-")
	for i := range options {
		o := &options[i]
		if o.Key == name || o.Flag == name || (o.Short != "" && o.Short == name) {
			return o, true
		}
	}
	return nil, false
}

// Set applies one option given as text, as from a CLI flag, to app. key is
// the config key or the flag name. List kinds append (args and
// interpreter_args are split as a shell would; stop_exit_codes may be
// comma-separated; watch "true" watches the app's cwd); env takes
// KEY=VALUE and adds it; other kinds replace. The error is an *Error naming
// the flag and saying what is wanted; app may then hold a partial value.
func Set(app *spec.App, key, value string) error {
	o, ok := lookup(key)
	if !ok {
		msg := "unknown option"
		if s := suggest(strings.TrimLeft(key, "-"), flagNames()); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", s)
		}
		return &Error{Key: "--" + strings.TrimLeft(key, "-"), Err: fmt.Errorf("%s", msg)}
	}
	if err := o.set(app, value); err != nil {
		return &Error{Key: "--" + o.Flag, Err: err}
	}
	return nil
}

func flagNames() []string {
	var names []string
	for _, o := range options {
		names = append(names, o.Flag)
	}
	return names
}

func setString(field func(*spec.App) *string) func(*spec.App, string) error {
	return func(a *spec.App, v string) error { *field(a) = v; return nil }
}

func appendString(field func(*spec.App) *[]string) func(*spec.App, string) error {
	return func(a *spec.App, v string) error {
		p := field(a)
		*p = append(*p, v)
		return nil
	}
}

func setInt(field func(*spec.App) *int) func(*spec.App, string) error {
	return func(a *spec.App, v string) error {
		n, err := parseInt(v)
		if err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("%d: must not be negative", n)
		}
		*field(a) = n
		return nil
	}
}

func setBool(field func(*spec.App) *bool) func(*spec.App, string) error {
	return func(a *spec.App, v string) error {
		b, err := parseBool(v)
		return assign(field(a), b, err)
	}
}

func setDuration(field func(*spec.App) *spec.Duration) func(*spec.App, string) error {
	return func(a *spec.App, v string) error {
		d, err := parseDuration(v)
		return assign(field(a), d, err)
	}
}

// assign stores v in *p when err is nil, and returns err.
func assign[T any](p *T, v T, err error) error {
	if err == nil {
		*p = v
	}
	return err
}

func setEnv(a *spec.App, k, v string) {
	if a.Env == nil {
		a.Env = make(map[string]string)
	}
	a.Env[k] = v
}

// suggest returns the candidate closest to s, if one is close enough to be
// a likely typo, else "".
func suggest(s string, candidates []string) string {
	best, bestD := "", 0
	for _, c := range candidates {
		d := distance(strings.ToLower(s), c)
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	limit := max(2, len(s)/3)
	if best == "" || bestD > limit {
		return ""
	}
	return best
}

// distance is the Levenshtein distance between a and b, with '-' and '_'
// counted as the same.
func distance(a, b string) int {
	norm := func(s string) []rune { return []rune(strings.ReplaceAll(s, "-", "_")) }
	ra, rb := norm(a), norm(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// keys returns the option keys, sorted.
func keys() []string {
	var ks []string
	for _, o := range options {
		ks = append(ks, o.Key)
	}
	slices.Sort(ks)
	return ks
}
