package spec

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Readiness modes. A Ready value is one of these, or a "tcp://host:port" or
// "http://host:port/path" address to probe.
const (
	ReadyNone    = "none"
	ReadyNotify  = "notify"
	ReadyMessage = "message"
	ReadyListen  = "listen"
)

// Defaults named by SPEC.md.
const (
	DefaultReadyTimeout = Duration(30 * time.Second)
	DefaultKillSignal   = "SIGTERM"
	DefaultKillTimeout  = Duration(5 * time.Second)
	DefaultMinUptime    = Duration(time.Second)
	DefaultMaxRestarts  = 15
	DefaultRestartDelay = Duration(100 * time.Millisecond)
	DefaultBackoffMax   = Duration(30 * time.Second)
	DefaultLogMaxSize   = Size(10 << 20)
	DefaultLogKeep      = 5
)

// App is one app definition. The JSON names are SPEC.md's config keys.
// Zero values mean "default"; Normalize fills them in.
type App struct {
	Name            string            `json:"name"`
	Script          string            `json:"script"`
	Args            []string          `json:"args,omitempty"`
	Interpreter     string            `json:"interpreter,omitempty"`      // "" picks by extension; "none" execs the script
	InterpreterArgs []string          `json:"interpreter_args,omitempty"` // e.g. node's flags (pm2: node_args)
	Cwd             string            `json:"cwd,omitempty"`
	Env             map[string]string `json:"env,omitempty"`
	Instances       int               `json:"instances,omitempty"`
	// MinReady is how many instances must be ready for the app to count
	// as ready (keel run's /readyz); 0 means all of them.
	MinReady int  `json:"min_ready,omitempty"`
	Cluster  bool `json:"cluster,omitempty"` // pm2's exec_mode: cluster

	Listen       []string `json:"listen,omitempty"`
	Ready        string   `json:"ready,omitempty"`
	ReadyTimeout Duration `json:"ready_timeout,omitempty"`

	KillSignal    string   `json:"kill_signal,omitempty"`
	KillTimeout   Duration `json:"kill_timeout,omitempty"`
	Restart       string   `json:"restart,omitempty"`
	StopExitCodes []int    `json:"stop_exit_codes,omitempty"`
	MinUptime     Duration `json:"min_uptime,omitempty"`
	MaxRestarts   int      `json:"max_restarts,omitempty"`
	RestartDelay  Duration `json:"restart_delay,omitempty"`
	BackoffMax    Duration `json:"backoff_max,omitempty"`

	MaxMemory      Size     `json:"max_memory,omitempty"`
	CronRestart    string   `json:"cron_restart,omitempty"`
	Watch          []string `json:"watch,omitempty"`
	WatchIgnore    []string `json:"watch_ignore,omitempty"`
	HealthURL      string   `json:"health_url,omitempty"`
	HealthInterval Duration `json:"health_interval,omitempty"`
	HealthFailures int      `json:"health_failures,omitempty"`
	OnCrash        string   `json:"on_crash,omitempty"` // a command (crash JSON on stdin) or an http(s) URL
	// GracefulCrash: a Node app under keel's preload drains on a fatal
	// error instead of dying at once (see CrashesGracefully). nil: on.
	GracefulCrash *bool `json:"graceful_crash,omitempty"`

	LogMaxSize Size `json:"log_max_size,omitempty"`
	LogKeep    int  `json:"log_keep,omitempty"`

	// LogsUntilRead is set by keel run --log-files=false, not a config
	// key: a rotated log file stays until the echo has read and removed
	// it, and the writer does not rotate again before then, so a burst
	// larger than LogMaxSize is not lost between two reads.
	LogsUntilRead bool `json:"logs_until_read,omitempty"`

	// ShellEnv is the environment (KEY=VALUE) of the `keel start` that
	// defined the app: the base of every instance's environment, under Env
	// and keel's own variables, as pm2 does, so that `PORT=4000 keel start
	// app.js` works. Kept across restarts, reloads, daemon restarts and
	// resurrect. Not a config key; nil means the daemon's environment.
	ShellEnv []string `json:"shell_env,omitempty"`
}

// ValidName reports whether s may name an app: letters, digits, '.', '_'
// and '-', starting with a letter or digit, at most 64 bytes. Names become
// file names under KEEL_HOME, so nothing else is allowed. (Checked by hand:
// a package-level regexp costs every keel command 0.3 ms at start-up.)
func ValidName(s string) bool {
	if s == "" || len(s) > 64 || s == "all" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// DefaultName is the name an app gets from its script: the base name
// without extension ("server.js" → "server").
func DefaultName(script string) string {
	base := filepath.Base(script)
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

// Normalize fills every unset option with its SPEC.md default. It does not
// validate; call Validate after it.
func (a *App) Normalize() {
	if a.Name == "" && a.Script != "" {
		a.Name = DefaultName(a.Script)
	}
	if a.Instances == 0 {
		a.Instances = 1
	}
	if a.Ready == "" {
		a.Ready = ReadyNone
		if len(a.Listen) > 0 || a.Cluster || a.Instances > 1 {
			if a.isNode() {
				a.Ready = ReadyListen
			}
		}
	}
	if a.ReadyTimeout == 0 {
		a.ReadyTimeout = DefaultReadyTimeout
	}
	if a.KillSignal == "" {
		a.KillSignal = DefaultKillSignal
	}
	if a.KillTimeout == 0 {
		a.KillTimeout = DefaultKillTimeout
	}
	if a.Restart == "" {
		a.Restart = RestartAlways
	}
	if a.MinUptime == 0 {
		a.MinUptime = DefaultMinUptime
	}
	if a.MaxRestarts == 0 {
		a.MaxRestarts = DefaultMaxRestarts
	}
	if a.RestartDelay == 0 {
		a.RestartDelay = DefaultRestartDelay
	}
	if a.BackoffMax == 0 {
		a.BackoffMax = DefaultBackoffMax
	}
	if a.LogMaxSize == 0 {
		a.LogMaxSize = DefaultLogMaxSize
	}
	if a.LogKeep == 0 {
		a.LogKeep = DefaultLogKeep
	}
	if a.HealthURL != "" {
		if a.HealthInterval == 0 {
			a.HealthInterval = Duration(10 * time.Second)
		}
		if a.HealthFailures == 0 {
			a.HealthFailures = 3
		}
	}
}

// FieldError names the option that is wrong.
type FieldError struct {
	Field string // the snake_case key
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks a normalized app and returns the first problem as a
// *FieldError naming the key.
func (a *App) Validate() error {
	switch {
	case !ValidName(a.Name):
		return fieldErr("name", "%q is not a valid app name (letters, digits, '.', '_', '-'; not \"all\")", a.Name)
	case a.Script == "":
		return fieldErr("script", "is required")
	case a.Instances < 1:
		return fieldErr("instances", "must be at least 1, got %d", a.Instances)
	case a.MinReady < 0:
		return fieldErr("min_ready", "must not be negative")
	case a.MaxRestarts < 0:
		return fieldErr("max_restarts", "must not be negative")
	case a.LogKeep < 0:
		return fieldErr("log_keep", "must not be negative")
	case a.HealthFailures < 0:
		return fieldErr("health_failures", "must not be negative")
	}
	switch a.Restart {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fieldErr("restart", "%q: want always, on-failure or never", a.Restart)
	}
	if err := CheckReady(a.Ready); err != nil {
		return &FieldError{Field: "ready", Err: err}
	}
	if _, err := ParseSignal(a.KillSignal); err != nil {
		return &FieldError{Field: "kill_signal", Err: err}
	}
	for _, c := range a.StopExitCodes {
		if c < 0 || c > 255 {
			return fieldErr("stop_exit_codes", "%d is not an exit code (0-255)", c)
		}
	}
	if a.BackoffMax < a.RestartDelay {
		return fieldErr("backoff_max", "%s is less than restart_delay %s", a.BackoffMax, a.RestartDelay)
	}
	return nil
}

// CheckReady validates a readiness mode.
func CheckReady(r string) error {
	switch r {
	case ReadyNone, ReadyNotify, ReadyMessage, ReadyListen:
		return nil
	}
	if rest, ok := strings.CutPrefix(r, "tcp://"); ok && rest != "" {
		return nil
	}
	if rest, ok := strings.CutPrefix(r, "http://"); ok && rest != "" {
		return nil
	}
	return fmt.Errorf("%q: want notify, message, listen, none, tcp://host:port or http://host:port/path", r)
}

// Interpreter returns the program that runs script: node for .js, .mjs and
// .cjs, python3 for .py, and "" (exec the script itself) otherwise or when
// interpreter is "none".
func (a *App) interpreter() string {
	switch a.Interpreter {
	case "none":
		return ""
	case "":
		switch strings.ToLower(filepath.Ext(a.Script)) {
		case ".js", ".mjs", ".cjs":
			return "node"
		case ".py":
			return "python3"
		}
		return ""
	}
	return a.Interpreter
}

// IsNode reports whether the app runs under node.
func (a *App) IsNode() bool { return a.isNode() }

func (a *App) isNode() bool {
	ip := a.interpreter()
	return ip != "" && (filepath.Base(ip) == "node" || filepath.Base(ip) == "nodejs")
}

// Argv is the command line for one instance: interpreter (if any), its
// args, the script and the app's args. The first element is not resolved
// against PATH.
func (a *App) Argv() []string {
	var argv []string
	if ip := a.interpreter(); ip != "" {
		argv = append(argv, ip)
		argv = append(argv, a.InterpreterArgs...)
	}
	argv = append(argv, a.Script)
	return append(argv, a.Args...)
}

// Signal is KillSignal parsed; SIGTERM when unset or invalid.
func (a *App) Signal() syscall.Signal {
	s, err := ParseSignal(a.KillSignal)
	if err != nil {
		return syscall.SIGTERM
	}
	return s
}

// CrashesGracefully reports whether a fatal error in a Node app lets the
// requests in flight finish while a replacement starts (graceful_crash,
// on unless set to false).
func (a *App) CrashesGracefully() bool { return a.GracefulCrash == nil || *a.GracefulCrash }

// StopsOn reports whether exit code c is one of StopExitCodes.
func (a *App) StopsOn(c int) bool {
	for _, x := range a.StopExitCodes {
		if x == c {
			return true
		}
	}
	return false
}

// Clone returns a deep copy.
func (a *App) Clone() *App {
	b := *a
	b.Args = append([]string(nil), a.Args...)
	b.InterpreterArgs = append([]string(nil), a.InterpreterArgs...)
	b.Listen = append([]string(nil), a.Listen...)
	b.StopExitCodes = append([]int(nil), a.StopExitCodes...)
	b.Watch = append([]string(nil), a.Watch...)
	b.WatchIgnore = append([]string(nil), a.WatchIgnore...)
	b.ShellEnv = append([]string(nil), a.ShellEnv...)
	if a.GracefulCrash != nil {
		v := *a.GracefulCrash
		b.GracefulCrash = &v
	}
	if a.Env != nil {
		b.Env = make(map[string]string, len(a.Env))
		for k, v := range a.Env {
			b.Env[k] = v
		}
	}
	return &b
}

// ReadyNeed is how many ready instances make the app ready: MinReady when
// set (at most Instances), else every instance.
func (a *App) ReadyNeed() int {
	if a.MinReady > 0 && a.MinReady < a.Instances {
		return a.MinReady
	}
	return a.Instances
}
