package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keel-run/keel/internal/oneline"
	"github.com/keel-run/keel/internal/spec"
)

// Error is a problem with one option: in a config file (File set; Line when
// the format has lines) or on the command line (File empty, Key the flag).
// Its text is one line:
//
//	keel.yaml:7: apps[1].instances: "lots" is not a number or "max"
//	ecosystem.config.js: apps[0].max_memory_restart: size "x": want e.g. 300M, 1G or a number of bytes
//	--kill-timeout: duration "x": want e.g. 500ms, 3s, 1m or milliseconds
type Error struct {
	File string // the config file as given to Load; "" for flags
	Line int    // 1-based line in File; 0 when unknown
	Key  string // "apps[1].instances", "--instances" or "script"; may be ""
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(oneline.Fold(e.Err.Error(), 0))
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

type dialect int

const (
	keelDialect dialect = iota // keel's keys only
	pm2Dialect                 // pm2's keys and keel's
)

// decoder turns a file's parse tree into apps.
type decoder struct {
	file    string
	dialect dialect
}

func (d *decoder) errorf(line int, key, format string, args ...any) *Error {
	return &Error{File: d.file, Line: line, Key: key, Err: fmt.Errorf(format, args...)}
}

// source is where an option of an app was set.
type source struct {
	key  string // the key as written (a pm2 key maps to a keel option)
	line int
}

// appDecoder decodes one app of a file.
type appDecoder struct {
	*decoder
	index int
	line  int
	app   *spec.App
	src   map[string]source // keel option key → where it was set
	// envSets are the app's env_<name> blocks, by name.
	envSets map[string]map[string]string
}

func (ad *appDecoder) path(key string) string { return fmt.Sprintf("apps[%d].%s", ad.index, key) }

func (ad *appDecoder) fail(p pair, err error) *Error {
	line := p.line
	if line == 0 {
		line = p.val.line
	}
	return &Error{File: ad.file, Line: line, Key: ad.path(p.key), Err: err}
}

// at returns an error for keel option field, placed where the file set it
// (or at the app when the file did not).
func (ad *appDecoder) at(field string, err error) *Error {
	if s, ok := ad.src[field]; ok {
		return &Error{File: ad.file, Line: s.line, Key: ad.path(s.key), Err: err}
	}
	return &Error{File: ad.file, Line: ad.line, Key: ad.path(field), Err: err}
}

// claim records that key p sets option field, refusing a second key that
// sets the same option (pm2's node_args next to interpreter_args).
func (ad *appDecoder) claim(field string, p pair) error {
	if s, ok := ad.src[field]; ok {
		where := ""
		if s.line > 0 {
			where = fmt.Sprintf(" (line %d)", s.line)
		}
		return ad.fail(p, fmt.Errorf("sets the same option as %s%s; keep one", s.key, where))
	}
	ad.src[field] = source{key: p.key, line: p.line}
	return nil
}

// decodeRoot finds the apps list and decodes each app.
func (d *decoder) decodeRoot(root *treeNode) ([]*appDecoder, error) {
	var apps *pair
	switch root.kind {
	case mapNode:
		for i := range root.pairs {
			p := &root.pairs[i]
			switch {
			case p.key == "apps":
				apps = p
			case p.key == "deploy" && d.dialect == pm2Dialect:
				// pm2's deploy section: not keel's business.
			case strings.HasPrefix(p.key, "x-"):
				// Free for the user, e.g. YAML anchors of shared options
				// (as docker compose allows).
			default:
				want := "apps"
				if d.dialect == pm2Dialect {
					want = "apps or deploy"
				}
				return nil, d.errorf(p.line, p.key, "unknown top-level key: want %s (keys starting x- are free for your own use)", want)
			}
		}
	case listNode:
		if d.dialect == pm2Dialect {
			// pm2 also takes a bare list of apps.
			apps = &pair{key: "apps", line: root.line, val: root}
		}
	}
	if apps == nil {
		return nil, d.errorf(root.line, "apps", "missing: want a top-level apps list, e.g. apps: [{name: api, script: server.js}]")
	}
	if apps.val.kind != listNode {
		return nil, d.errorf(apps.line, "apps", "want a list of apps, got %s", apps.val.describe())
	}
	if len(apps.val.items) == 0 {
		return nil, d.errorf(apps.line, "apps", "is empty: list at least one app")
	}
	var out []*appDecoder
	for i, it := range apps.val.items {
		ad := &appDecoder{decoder: d, index: i, line: it.line, app: &spec.App{}, src: map[string]source{}}
		if it.kind != mapNode {
			return nil, d.errorf(it.line, fmt.Sprintf("apps[%d]", i), "want an app (a map of options), got %s", it.describe())
		}
		if err := ad.decode(it); err != nil {
			return nil, err
		}
		out = append(out, ad)
	}
	return out, nil
}

// decode applies every key of one app's map.
func (ad *appDecoder) decode(m *treeNode) error {
	var port *pair
	for i := range m.pairs {
		p := m.pairs[i]
		if p.val.kind == nullNode {
			continue // "key:" with no value leaves the default
		}
		if name, ok := strings.CutPrefix(p.key, "env_"); ok && name != "" {
			if err := ad.envSet(name, p); err != nil {
				return err
			}
			continue
		}
		if ad.dialect == pm2Dialect {
			if p.key == "port" {
				port = &m.pairs[i]
				continue
			}
			if h, ok := pm2Keys[p.key]; ok {
				if err := h(ad, p); err != nil {
					return err
				}
				continue
			}
			if isIgnoredPM2Key(p.key) {
				continue
			}
		}
		o, ok := optionByKey(p.key)
		if !ok {
			return ad.unknown(p)
		}
		if err := ad.option(o, p); err != nil {
			return err
		}
	}
	if port != nil {
		// pm2's port is a shortcut for env PORT, and wins over env.
		if port.val.kind != scalarNode || port.val.tag == tagBool {
			return ad.fail(*port, fmt.Errorf("want a port number, got %s", port.val.describe()))
		}
		setEnv(ad.app, "PORT", port.val.text)
	}
	return nil
}

// envSet decodes an env_<name> block (applied with --env <name>) as env
// is decoded, so that a bad one is refused whether it is selected or not.
func (ad *appDecoder) envSet(name string, p pair) error {
	o, _ := optionByKey("env")
	scratch := &spec.App{}
	if err := applyNode(scratch, o, p.val); err != nil {
		return ad.fail(p, err)
	}
	if ad.envSets == nil {
		ad.envSets = map[string]map[string]string{}
	}
	if scratch.Env == nil {
		scratch.Env = map[string]string{}
	}
	ad.envSets[name] = scratch.Env
	return nil
}

func optionByKey(key string) (*option, bool) {
	for i := range options {
		if options[i].Key == key {
			return &options[i], true
		}
	}
	return nil, false
}

// unknown refuses a key nobody knows, suggesting a close one.
func (ad *appDecoder) unknown(p pair) error {
	if ad.dialect == keelDialect {
		if hint, ok := pm2Hints[p.key]; ok {
			return ad.fail(p, fmt.Errorf("is pm2's key; in a keel file write %s (or name the file ecosystem.config.* to read pm2 keys)", hint))
		}
		if isIgnoredPM2Key(p.key) || pm2Keys[p.key] != nil {
			return ad.fail(p, errors.New("is pm2's key, which keel files do not take; remove it, or name the file ecosystem.config.* to read pm2 keys"))
		}
	}
	known := keys()
	if ad.dialect == pm2Dialect {
		for k := range pm2Keys {
			known = append(known, k)
		}
		known = append(known, "port")
		slices.Sort(known)
	}
	msg := "unknown key"
	if s := suggest(p.key, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return ad.fail(p, errors.New(msg))
}

// option applies keel option o from pair p; field conflicts are checked
// under o.Key.
func (ad *appDecoder) option(o *option, p pair) error {
	if err := ad.claim(o.Key, p); err != nil {
		return err
	}
	if err := applyNode(ad.app, o, p.val); err != nil {
		return ad.fail(p, err)
	}
	return nil
}

// applyNode sets option o on a from a file's value.
func applyNode(a *spec.App, o *option, n *treeNode) error {
	switch o.Kind {
	case Env:
		switch n.kind {
		case mapNode:
			for _, p := range n.pairs {
				if err := checkEnvName(p.key); err != nil {
					return err
				}
				switch p.val.kind {
				case nullNode:
					setEnv(a, p.key, "")
				case scalarNode:
					setEnv(a, p.key, p.val.text)
				default:
					return fmt.Errorf("%s: want a string, number or boolean, got %s", p.key, p.val.describe())
				}
			}
			return nil
		case listNode:
			for _, it := range n.items {
				if it.kind != scalarNode {
					return fmt.Errorf("want KEY=VALUE, got %s", it.describe())
				}
				if err := o.set(a, it.text); err != nil {
					return err
				}
			}
			return nil
		}
		return fmt.Errorf("want a map of NAME: value, got %s", n.describe())
	case List:
		switch n.kind {
		case listNode:
			add := o.item
			if add == nil {
				add = o.set
			}
			for _, it := range n.items {
				if it.kind != scalarNode || (it.tag == tagBool && o.Key != "watch") {
					return fmt.Errorf("want a list of values, got %s in it", it.describe())
				}
				if err := add(a, it.text); err != nil {
					return err
				}
			}
			return nil
		case scalarNode:
			if n.tag == tagBool && o.Key != "watch" {
				return fmt.Errorf("want a value or a list, got %s", n.describe())
			}
			return o.set(a, n.text)
		}
		return fmt.Errorf("want a value or a list, got %s", n.describe())
	}
	if n.kind != scalarNode {
		return fmt.Errorf("want %s, got %s", kindNoun(o.Kind), n.describe())
	}
	if n.tag == tagBool && o.Kind != Bool && o.Kind != String {
		return fmt.Errorf("want %s, got %s", kindNoun(o.Kind), n.describe())
	}
	if n.tag == tagOther {
		return fmt.Errorf("want %s, got %s", kindNoun(o.Kind), n.describe())
	}
	return o.set(a, n.text)
}

func kindNoun(k Kind) string {
	switch k {
	case Int:
		return "a number"
	case Bool:
		return "true or false"
	case Duration:
		return "a duration (500ms, 3s, 1m or milliseconds)"
	case Size:
		return "a size (300M, 1G or bytes)"
	}
	return "a string"
}

// pm2Handler applies one pm2 key.
type pm2Handler func(ad *appDecoder, p pair) error

// pm2Keys are pm2's names that keel honours differently from its own
// option of the same name, or under another name.
var pm2Keys = map[string]pm2Handler{
	"exec_interpreter":          alias("interpreter"),
	"node_args":                 alias("interpreter_args"),
	"listen_timeout":            alias("ready_timeout"),
	"max_memory_restart":        alias("max_memory"),
	"exp_backoff_restart_delay": alias("restart_delay"),
	"cron":                      alias("cron_restart"),
	"ignore_watch":              alias("watch_ignore"),
	"instances": func(ad *appDecoder, p pair) error {
		if err := ad.claim("instances", p); err != nil {
			return err
		}
		if p.val.kind != scalarNode || p.val.tag == tagBool || p.val.tag == tagOther {
			return ad.fail(p, fmt.Errorf("want a number or \"max\", got %s", p.val.describe()))
		}
		n, err := parsePM2Instances(p.val.text)
		if err != nil {
			return ad.fail(p, err)
		}
		ad.app.Instances = n
		return nil
	},
	"exec_mode": func(ad *appDecoder, p pair) error {
		if err := ad.claim("cluster", p); err != nil {
			return err
		}
		switch scalarText(p.val) {
		case "cluster", "cluster_mode":
			ad.app.Cluster = true
		case "fork", "fork_mode":
			ad.app.Cluster = false
		default:
			return ad.fail(p, fmt.Errorf("%s: want cluster or fork", p.val.describe()))
		}
		return nil
	},
	"wait_ready": func(ad *appDecoder, p pair) error {
		b, err := nodeBool(p.val)
		if err != nil {
			return ad.fail(p, err)
		}
		if b {
			if err := ad.claim("ready", p); err != nil {
				return err
			}
			ad.app.Ready = spec.ReadyMessage
		}
		return nil
	},
	"autorestart": func(ad *appDecoder, p pair) error {
		b, err := nodeBool(p.val)
		if err != nil {
			return ad.fail(p, err)
		}
		if !b {
			if err := ad.claim("restart", p); err != nil {
				return err
			}
			ad.app.Restart = spec.RestartNever
		}
		return nil
	},
	"treekill": mustBe("true", "keel always stops the whole process group"),
	"shutdown_with_message": mustBe("false",
		"keel stops an instance with kill_signal; handle that signal (or set kill_signal) instead"),
	"instance_var": mustBe("NODE_APP_INSTANCE",
		"keel sets NODE_APP_INSTANCE and KEEL_INSTANCE to the instance number; read one of those"),
	"filter_env": mustBe("false", "keel does not filter the environment by name; unset what the app must not see before starting keel"),
	"uid":        refuse("keel runs apps as the user running keel; run keel as that user instead"),
	"gid":        refuse("keel runs apps as the user running keel; run keel as that user instead"),
	"user":       refuse("keel runs apps as the user running keel; run keel as that user instead"),
	"increment_var": refuse(
		"keel does not number variables per instance; read NODE_APP_INSTANCE or KEEL_INSTANCE"),
}

// pm2Hints name keel's spelling of a pm2 key, for keel files.
var pm2Hints = map[string]string{
	"exec_interpreter":          "interpreter",
	"node_args":                 "interpreter_args",
	"listen_timeout":            "ready_timeout",
	"max_memory_restart":        "max_memory",
	"exp_backoff_restart_delay": "restart_delay",
	"cron":                      "cron_restart",
	"ignore_watch":              "watch_ignore",
	"exec_mode":                 "cluster: true",
	"wait_ready":                "ready: message",
	"autorestart":               "restart: never",
	"port":                      "env: {PORT: …}",
}

// ignoredPM2Keys shape only pm2's own log files, pid files, monitoring and
// deployment, or tune behaviour keel does its own way; a pm2 file may carry
// them and keel ignores them. So are env_<name> sets (pm2's --env <name>).
var ignoredPM2Keys = []string{
	// logs: keel captures stdout and stderr under KEEL_HOME itself
	"out_file", "out", "output", "out_log",
	"error_file", "error", "err", "err_file", "err_log",
	"log_file", "log", "log_date_format", "log_type", "merge_logs", "combine_logs",
	"time", "disable_logs",
	// pid files, monitoring, pm2.io
	"pid_file", "pid", "pmx", "automation", "vizion", "trace", "disable_trace",
	"v8", "event_loop_inspector", "deep_monitoring", "io", "source_map_support",
	"disable_source_map_support",
	// pm2's CLI and internals
	"namespace", "force", "append_env_to_name", "post_update", "execute_command",
	"kill_retry_time", "windowsHide", "username",
	// watch tuning
	"watch_delay", "watch_options",
}

// IgnoredPM2Keys returns the pm2 keys an ecosystem file may carry that keel
// accepts and ignores (besides env_<name>), sorted.
func IgnoredPM2Keys() []string {
	out := slices.Clone(ignoredPM2Keys)
	slices.Sort(out)
	return out
}

func isIgnoredPM2Key(k string) bool {
	return strings.HasPrefix(k, "env_") || slices.Contains(ignoredPM2Keys, k)
}

// alias applies a pm2 key as keel's option key.
func alias(key string) pm2Handler {
	return func(ad *appDecoder, p pair) error {
		o, ok := optionByKey(key)
		if !ok {
			panic("config: alias of unknown option " + key)
		}
		return ad.option(o, p)
	}
}

// mustBe accepts a pm2 key only at the value keel behaves as.
func mustBe(want, why string) pm2Handler {
	return func(ad *appDecoder, p pair) error {
		if p.val.kind == scalarNode && strings.EqualFold(p.val.text, want) {
			return nil
		}
		return ad.fail(p, fmt.Errorf("%s is not supported: %s", p.val.describe(), why))
	}
}

// refuse rejects a pm2 key keel cannot honour.
func refuse(why string) pm2Handler {
	return func(ad *appDecoder, p pair) error {
		return ad.fail(p, fmt.Errorf("is not supported: %s", why))
	}
}

func scalarText(n *treeNode) string {
	if n.kind != scalarNode {
		return n.describe()
	}
	return n.text
}

func nodeBool(n *treeNode) (bool, error) {
	if n.kind != scalarNode {
		return false, fmt.Errorf("want true or false, got %s", n.describe())
	}
	return parseBool(n.text)
}
