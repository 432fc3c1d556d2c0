package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/control/controltest"
	"github.com/keel-run/keel/internal/spec"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "daemon" && os.Getenv(controltest.DaemonEnv) != "" {
		os.Exit(controltest.FakeDaemon())
	}
	goleak.VerifyTestMain(m)
}

// env is one KEEL_HOME, with or without a fake daemon serving it.
type env struct {
	t    *testing.T
	home string
	b    *controltest.Backend
	deps Deps
}

// newEnv returns an env with no daemon. Deps.Exe does not exist, so a
// command that tries to start the daemon fails.
func newEnv(t *testing.T) *env {
	t.Helper()
	home := filepath.Join(t.TempDir(), "k")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, home: home}
	e.deps = Deps{
		Exe:     "/nonexistent/keel",
		Version: "1.2.3",
		Getenv: func(k string) string {
			switch k {
			case "KEEL_HOME":
				return e.home
			case "HOME":
				return "/home/nobody-here"
			}
			return ""
		},
		Environ: func() []string { return []string{"KEEL_HOME=" + e.home, "PORT=4000"} },
	}
	return e
}

// served returns an env whose socket is served by a fake backend.
func served(t *testing.T, b *controltest.Backend) *env {
	t.Helper()
	e := newEnv(t)
	e.b = b
	controltest.Serve(t, e.home, b)
	return e
}

func (e *env) run(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, Stdio{Out: &out, Err: &errb}, e.deps)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and say nothing on stderr.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	code, out, errs := e.run(args...)
	if code != 0 || errs != "" {
		e.t.Fatalf("keel %s: exit %d, stderr %q", strings.Join(args, " "), code, errs)
	}
	return out
}

// calls returns the backend calls, none when no backend.
func (e *env) calls() []string {
	if e.b == nil {
		return nil
	}
	return e.b.Calls()
}

func intp(i int) *int       { return &i }
func strp(s string) *string { return &s }

var at = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func sampleInstances() []api.Instance {
	return []api.Instance{
		{App: "web", Instance: 0, Pid: 4242, Status: "online", Restarts: 2, UptimeMs: 185_000, MemoryBytes: 47_396_044, CPUPercent: 1.25},
		{App: "web", Instance: 1, Pid: 4243, Status: "starting", UptimeMs: 900, MemoryBytes: 2048},
		{App: "api", Instance: 0, Status: "errored", Restarts: 15, Reason: "crash loop: 16 unstable runs in a row",
			LastExit: &spec.Exit{Code: intp(1), At: at}},
		{App: "job", Instance: 0, Status: "stopped", LastExit: &spec.Exit{Signal: strp("SIGTERM"), At: at, Reason: "stop"}},
	}
}

// oneLineErr checks that stderr is exactly one line and returns it.
func oneLineErr(t *testing.T, stderr string) string {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Fatalf("stderr %q is not exactly one line", stderr)
	}
	return strings.TrimSuffix(stderr, "\n")
}

func TestListJSON(t *testing.T) {
	e := served(t, &controltest.Backend{Instances: sampleInstances()})
	for _, cmd := range []string{"ls", "list", "status"} {
		out := e.ok(cmd, "--json")
		var raw []map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatalf("%s --json printed something that is not a JSON array: %v\n%s", cmd, err, out)
		}
		want := []string{"app", "cpu_percent", "instance", "last_exit", "memory_bytes", "pid", "restarts", "status", "uptime_ms"}
		for i, obj := range raw {
			var keys []string
			for k := range obj {
				if k != "reason" && k != "status_text" {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			if !reflect.DeepEqual(keys, want) {
				t.Errorf("%s --json object %d has keys %v, want %v", cmd, i, keys, want)
			}
			if le := obj["last_exit"]; string(le) != "null" {
				var x map[string]json.RawMessage
				json.Unmarshal(le, &x)
				for _, k := range []string{"code", "signal", "at"} {
					if _, ok := x[k]; !ok {
						t.Errorf("last_exit %s lacks %q", le, k)
					}
				}
			}
		}
		var got []api.Instance
		json.Unmarshal([]byte(out), &got)
		if !reflect.DeepEqual(got, sampleInstances()) {
			t.Errorf("%s --json round trip:\n got %+v\nwant %+v", cmd, got, sampleInstances())
		}
	}
	if calls := e.calls(); len(calls) != 3 || calls[0] != "List" {
		t.Errorf("backend calls %q, want three Lists", calls)
	}
}

func TestListJSONEmpty(t *testing.T) {
	e := served(t, &controltest.Backend{})
	if out := e.ok("ls", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls --json with no apps printed %q, want []", out)
	}
	if out := e.ok("ls"); !strings.Contains(out, "keel start") {
		t.Errorf("ls with no apps: %q, want a hint", out)
	}
}

func TestListTable(t *testing.T) {
	e := served(t, &controltest.Backend{Instances: sampleInstances()})
	out := e.ok("ls")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("ls printed %d lines, want a header and 4 rows:\n%s", len(lines), out)
	}
	if f := strings.Fields(lines[0]); !reflect.DeepEqual(f, []string{"NAME", "ID", "PID", "STATUS", "RESTARTS", "UPTIME", "CPU", "MEM", "INFO"}) {
		t.Errorf("header %q", lines[0])
	}
	if f := strings.Fields(lines[1]); !reflect.DeepEqual(f, []string{"web", "0", "4242", "online", "2", "3m", "1.2%", "45.2M"}) {
		t.Errorf("online row %q", lines[1])
	}
	if f := strings.Fields(lines[2]); !reflect.DeepEqual(f, []string{"web", "1", "4243", "starting", "0", "0s", "0.0%", "2.0K"}) {
		t.Errorf("starting row %q", lines[2])
	}
	if !strings.HasPrefix(strings.Join(strings.Fields(lines[3]), " "), "api 0 - errored 15 - - - crash loop: 16 unstable runs in a row") {
		t.Errorf("errored row %q does not show the reason", lines[3])
	}
	if !strings.Contains(lines[4], "last exit: signal SIGTERM (stop)") {
		t.Errorf("stopped row %q does not show its last exit", lines[4])
	}
	for _, l := range lines {
		if strings.HasSuffix(l, " ") {
			t.Errorf("line %q ends in spaces", l)
		}
	}
	// Columns line up.
	col := strings.Index(lines[0], "STATUS")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "online") && !strings.HasPrefix(l[col:], "starting") &&
			!strings.HasPrefix(l[col:], "errored") && !strings.HasPrefix(l[col:], "stopped") {
			t.Errorf("row %q: status not under STATUS", l)
		}
	}
}

func TestHumanUnits(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0B"}, {1023, "1023B"}, {1024, "1.0K"}, {47_396_044, "45.2M"}, {3 << 30, "3.0G"}, {5 << 40, "5.0T"}} {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{0, "0s"}, {59 * time.Second, "59s"}, {time.Minute, "1m"}, {3*time.Hour + 5*time.Minute, "3h"}, {50 * time.Hour, "2d"}} {
		if got := humanDuration(tt.d); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestTargetCommands(t *testing.T) {
	e := served(t, &controltest.Backend{Instances: sampleInstances()[:1]})
	for _, tt := range []struct {
		args []string
		call string
		msg  string
	}{
		{[]string{"stop", "web:1"}, "Stop web:1", "stop web:1"},
		{[]string{"restart", "all"}, "Restart all", "restart all"},
		{[]string{"reload", "web"}, "Reload web", "reload web"},
		{[]string{"delete", "web"}, "Delete web", "delete web"},
		{[]string{"scale", "web", "4"}, "Scale web 4", "scaled web to 4"},
		{[]string{"save"}, "Save", "saved"},
		{[]string{"resurrect"}, "Resurrect", "resurrected"},
	} {
		before := len(e.calls())
		out := e.ok(tt.args...)
		if calls := e.calls()[before:]; !reflect.DeepEqual(calls, []string{tt.call}) {
			t.Errorf("keel %v: backend calls %q, want %q", tt.args, calls, tt.call)
		}
		lines := strings.Split(out, "\n")
		if lines[0] != tt.msg || !strings.Contains(out, "4242") {
			t.Errorf("keel %v printed %q, want the message and the instance table", tt.args, out)
		}
	}
	// --json prints the api.Result.
	out := e.ok("stop", "web", "--json")
	var res api.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Message != "stop web" || len(res.Instances) != 1 {
		t.Errorf("stop --json: %q (%v)", out, err)
	}
}

func TestUsageErrors(t *testing.T) {
	e := served(t, &controltest.Backend{})
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"frobnicate"}, `keel: unknown command "frobnicate"`},
		{[]string{"stpo", "web"}, `keel: unknown command "stpo" (did you mean "stop"?)`},
		{[]string{"--bogus"}, "keel: unknown flag: --bogus"},
		{[]string{"ls", "--bogus"}, "keel: unknown flag: --bogus"},
		{[]string{"ls", "extra"}, `keel: ls: unexpected argument "extra"`},
		{[]string{"stop"}, "keel: stop: missing <target>"},
		{[]string{"stop", "a", "b"}, `keel: stop: unexpected argument "b"`},
		{[]string{"stop", "bad/name"}, `keel: stop: target "bad/name": want an app name, name:N or all`},
		{[]string{"restart", "web:x"}, `keel: restart: target "web:x": instance "x" is not a number`},
		{[]string{"describe"}, "keel: describe: missing <target>"},
		{[]string{"scale", "web"}, "keel: scale: missing <N>"},
		{[]string{"scale", "web", "many"}, `keel: scale: instance count "many" is not a number ≥ 0`},
		{[]string{"scale", "all", "2"}, `keel: scale: "all" is not an app name`},
		{[]string{"crash"}, "keel: crash: missing <id>"},
		{[]string{"crashes", "a", "b"}, `keel: crashes: unexpected argument "b"`},
		{[]string{"logs", "--raw", "--json"}, "keel: logs: --raw and --json exclude each other"},
		{[]string{"logs", "--lines", "x"}, `keel: invalid argument "x" for "-n, --lines" flag`},
		{[]string{"start"}, "keel: start: missing <script|binary|config>"},
		{[]string{"start", "a", "b"}, `keel: start: unexpected argument "b" (arguments for the app go after --)`},
		{[]string{"start", "--instances", "lots", "/bin/true"}, `keel: start: --instances: "lots" is not a number or "max"`},
		{[]string{"start", "--bogus-flag", "/bin/true"}, "keel: unknown flag: --bogus-flag"},
		{[]string{"start", "--restart", "sometimes", "/bin/true"}, `keel: start: --restart: "sometimes": want always, on-failure or never`},
		{[]string{"run"}, "keel: run: missing <config>"},
		{[]string{"run", "app.js"}, "keel: run: app.js is not a config file"},
	} {
		code, out, errs := e.run(tt.args...)
		if code != 2 {
			t.Errorf("keel %v: exit %d, want 2 (stderr %q)", tt.args, code, errs)
			continue
		}
		if out != "" {
			t.Errorf("keel %v: stdout %q, want nothing", tt.args, out)
		}
		lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], tt.msg) || !strings.Contains(lines[1], "--help") {
			t.Errorf("keel %v: stderr\n%s\nwant %q and a hint", tt.args, errs, tt.msg)
		}
	}
	if calls := e.calls(); len(calls) != 0 {
		t.Errorf("usage errors reached the daemon: %q", calls)
	}
}

func TestFailures(t *testing.T) {
	e := served(t, &controltest.Backend{Errs: map[string]error{
		"Stop":     &spec.NotFoundError{What: "app web"},
		"Save":     errors.New("writing dump.json:\nno space left on device"),
		"Describe": &spec.NotFoundError{What: "app ghost"},
	}})
	for _, tt := range []struct {
		args []string
		line string
	}{
		{[]string{"stop", "web"}, "keel: stop web: app web not found"},
		{[]string{"save"}, "keel: save: writing dump.json:; no space left on device"},
		{[]string{"describe", "ghost", "--json"}, "keel: describe ghost: app ghost not found"},
		{[]string{"crash", "nope"}, "keel: crash nope: crash nope not found"},
	} {
		code, out, errs := e.run(tt.args...)
		if code != 1 {
			t.Errorf("keel %v: exit %d, want 1", tt.args, code)
		}
		if got := oneLineErr(t, errs); got != tt.line {
			t.Errorf("keel %v: stderr %q, want %q", tt.args, got, tt.line)
		}
		if out != "" {
			t.Errorf("keel %v: stdout %q, want nothing", tt.args, out)
		}
	}
}

func TestDaemonThatCannotStart(t *testing.T) {
	e := newEnv(t) // no daemon, and Exe does not exist
	code, out, errs := e.run("ls", "--json")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	if got := oneLineErr(t, errs); !strings.HasPrefix(got, "keel: ls: starting the daemon: ") {
		t.Errorf("stderr %q", got)
	}
}

func TestRefusedUIDMessage(t *testing.T) {
	// The daemon's refusal reads "keel: uid …"; the CLI does not repeat "keel:".
	e := served(t, &controltest.Backend{Errs: map[string]error{"List": errors.New("keel: uid 65534 may not control the daemon of uid 0")}})
	_, _, errs := e.run("ls")
	if got := oneLineErr(t, errs); got != "keel: ls: uid 65534 may not control the daemon of uid 0" {
		t.Errorf("stderr %q", got)
	}
}

// script writes an executable file and returns its absolute path.
func script(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartFlags(t *testing.T) {
	e := served(t, &controltest.Backend{})
	srv := script(t, t.TempDir(), "srv")
	out := e.ok("start", srv, "--name", "web", "-i", "3", "--listen", ":3000", "--listen", "unix:///tmp/x.sock",
		"--env", "A=1", "--env", "B=two words", "--kill-timeout", "2s", "--kill-signal", "SIGINT", "--max-memory", "300M",
		"--cluster", "--restart", "on-failure", "--stop-exit-codes", "3,4", "--ready", "notify", "--min-uptime", "1500",
		"--cwd", "/tmp", "--", "--port", "8080", "-v", "--", "x y")
	if !strings.HasPrefix(out, "started web") {
		t.Errorf("start printed %q", out)
	}
	apps := e.b.Started()
	if len(apps) != 1 {
		t.Fatalf("started %d apps, want 1", len(apps))
	}
	a := apps[0]
	want := &spec.App{
		Name: "web", Script: srv, Args: []string{"--port", "8080", "-v", "--", "x y"}, Cwd: "/tmp",
		Env: map[string]string{"A": "1", "B": "two words"}, Instances: 3, Cluster: true,
		Listen: []string{":3000", "unix:///tmp/x.sock"}, Ready: "notify", KillSignal: "SIGINT",
		KillTimeout: spec.Duration(2 * time.Second), Restart: "on-failure", StopExitCodes: []int{3, 4},
		MinUptime: spec.Duration(1500 * time.Millisecond), MaxMemory: 300 << 20,
		ShellEnv: []string{"KEEL_HOME=" + e.home, "PORT=4000"}, // the starter's environment goes with the app
	}
	want.Normalize()
	if !reflect.DeepEqual(a, want) {
		gb, _ := json.Marshal(a)
		wb, _ := json.Marshal(want)
		t.Errorf("started app\n got %s\nwant %s", gb, wb)
	}
}

func TestStartDefaults(t *testing.T) {
	e := served(t, &controltest.Backend{})
	dir := t.TempDir()
	srv := script(t, dir, "worker.sh")
	e.ok("start", srv)
	a := e.b.Started()[0]
	wd, _ := os.Getwd()
	if a.Name != "worker" || a.Script != srv || a.Instances != 1 || a.Cwd != wd || len(a.Args) != 0 {
		t.Errorf("started %+v", a)
	}
	// A command on PATH is kept as written.
	e.ok("start", "sh", "--name", "shell", "--", "-c", "sleep 1000")
	if a := e.b.Started()[1]; a.Script != "sh" || a.Name != "shell" || !reflect.DeepEqual(a.Args, []string{"-c", "sleep 1000"}) {
		t.Errorf("started %+v", a)
	}
}

func TestStartMissingScript(t *testing.T) {
	e := served(t, &controltest.Backend{})
	missing := filepath.Join(t.TempDir(), "nope.sh")
	code, out, errs := e.run("start", missing)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	want := `keel: start ` + missing + `: script: "` + missing + `": no such file`
	if got := oneLineErr(t, errs); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
	if calls := e.calls(); len(calls) != 0 {
		t.Errorf("a missing script reached the daemon: %q", calls)
	}
}

func TestStartConfig(t *testing.T) {
	e := served(t, &controltest.Backend{})
	dir := t.TempDir()
	script(t, dir, "srv")
	cfg := filepath.Join(dir, "keel.yaml")
	os.WriteFile(cfg, []byte("apps:\n  - name: web\n    script: ./srv\n    instances: 2\n  - name: worker\n    script: ./srv\n    args: [--queue, q1]\n"), 0o600)

	e.ok("start", cfg)
	apps := e.b.Started()
	if len(apps) != 2 || apps[0].Name != "web" || apps[0].Instances != 2 || apps[1].Name != "worker" ||
		apps[1].Script != filepath.Join(dir, "srv") || apps[0].Cwd != dir {
		t.Fatalf("started %+v", apps)
	}
	e.ok("start", cfg, "--only", "worker")
	if apps := e.b.Started(); len(apps) != 3 || apps[2].Name != "worker" {
		t.Fatalf("--only worker started %+v", apps[2:])
	}
	if calls := e.calls(); !reflect.DeepEqual(calls, []string{"Apply start web,worker", "Apply start worker"}) {
		t.Errorf("calls %q", calls)
	}

	// Flags that would set options are refused with a config file.
	code, _, errs := e.run("start", cfg, "--instances", "4")
	if code != 2 || !strings.Contains(errs, "--instances cannot be combined with a config file") {
		t.Errorf("start config --instances: %d %q", code, errs)
	}
	code, _, errs = e.run("start", cfg, "--only", "nope")
	if code != 2 || !strings.Contains(errs, `has no app "nope" (it has web, worker)`) {
		t.Errorf("start config --only nope: %d %q", code, errs)
	}

	// A bad config is refused whole, naming file, line and key.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apps:\n  - name: web\n    script: ./srv\n  - name: api\n    script: ./srv\n    instances: lots\n"), 0o600)
	code, out, errs := e.run("start", bad)
	if code != 1 || out != "" {
		t.Fatalf("bad config: exit %d stdout %q", code, out)
	}
	if got := oneLineErr(t, errs); !strings.HasPrefix(got, "keel: start: "+bad+":6: apps[1].instances:") {
		t.Errorf("bad config: %q", got)
	}
	if n := len(e.b.Started()); n != 3 {
		t.Errorf("a bad config started apps: %d", n)
	}
}

func TestDescribe(t *testing.T) {
	fired := at
	app := &spec.App{Name: "web", Script: "/srv/web/server.js", Args: []string{"--port", "3000"}, Env: map[string]string{"A": "1"}, Instances: 2, Listen: []string{":3000"}}
	app.Normalize()
	d := []api.AppDetail{{
		Spec: app, Desired: "running", Instances: sampleInstances()[:2],
		Exits:       []api.ExitRecord{{Instance: 0, Pid: 99, Exit: spec.Exit{Code: intp(2), At: at}}},
		LatestCrash: &api.CrashGroup{ID: "c0ffee", Title: "panic: boom", Count: 3, LastSeen: at},
		Triggers:    []api.TriggerInfo{{Kind: "max_memory", Detail: "300M", Count: 1, LastFired: &fired}},
		Sockets:     []string{"tcp 0.0.0.0:3000"},
	}}
	e := served(t, &controltest.Backend{Details: d})
	out := e.ok("describe", "web")
	for _, want := range []string{
		"web (desired: running)", "script", "/srv/web/server.js", "args", "--port 3000", "env", "A=1",
		"instances", "kill_timeout", "5s", "listen", ":3000", "log_max_size   10M", "4242", "code 2", "latest crash: panic: boom (3×",
		"keel crash c0ffee", "max_memory", "tcp 0.0.0.0:3000", filepath.Join(e.home, "logs"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe output lacks %q:\n%s", want, out)
		}
	}
	var got []api.AppDetail
	if err := json.Unmarshal([]byte(e.ok("describe", "web", "--json")), &got); err != nil || !reflect.DeepEqual(got[0].Spec, app) {
		t.Errorf("describe --json: %v", err)
	}
	if calls := e.calls(); !reflect.DeepEqual(calls, []string{"Describe web", "Describe web"}) {
		t.Errorf("calls %q", calls)
	}
}

func TestCrashes(t *testing.T) {
	g := api.CrashGroup{ID: "c0ffee", App: "web", Signature: "sig", Title: "panic: boom", Count: 3, FirstSeen: at, LastSeen: at, LastStack: "goroutine 1 [running]:\nmain.main()\n"}
	e := served(t, &controltest.Backend{
		Groups: []api.CrashGroup{g},
		Detail: api.CrashDetail{CrashGroup: g, Kind: "go-panic", Exits: []api.ExitRecord{{Instance: 1, Pid: 7, Exit: spec.Exit{Code: intp(2), At: at}}}},
	})
	out := e.ok("crashes")
	if !strings.Contains(out, "c0ffee") || !strings.Contains(out, "panic: boom") || !strings.HasPrefix(out, "ID") {
		t.Errorf("crashes:\n%s", out)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(e.ok("crashes", "web", "--json")), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("crashes --json: %v", err)
	}
	var keys []string
	for k := range raw[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{"app", "count", "first_seen", "id", "last_seen", "last_stack", "signature", "title"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("crash group keys %v, want %v", keys, want)
	}
	out = e.ok("crash", "c0ffee")
	for _, want := range []string{"crash c0ffee of web (go-panic)", "panic: boom", "  goroutine 1 [running]:", "web:1", "code 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("crash output lacks %q:\n%s", want, out)
		}
	}
	var d api.CrashDetail
	if err := json.Unmarshal([]byte(e.ok("crash", "c0ffee", "--json")), &d); err != nil || d.Kind != "go-panic" || d.ID != "c0ffee" {
		t.Errorf("crash --json: %+v %v", d, err)
	}
	if calls := e.calls(); !reflect.DeepEqual(calls, []string{`Crashes ""`, `Crashes "web"`, "Crash c0ffee", "Crash c0ffee"}) {
		t.Errorf("calls %q", calls)
	}
}

func TestVersion(t *testing.T) {
	e := newEnv(t)
	if out := e.ok("version"); out != "keel 1.2.3\n" {
		t.Errorf("version without a daemon: %q", out)
	}
	if out := e.ok("--version"); out != "keel 1.2.3\n" {
		t.Errorf("--version: %q", out)
	}
	controltest.Serve(t, e.home, &controltest.Backend{Ver: api.Version{Version: "1.2.0", Pid: 77, Home: e.home}})
	if out := e.ok("version"); out != "keel 1.2.3\ndaemon 1.2.0 (pid 77, KEEL_HOME "+e.home+")\n" {
		t.Errorf("version with a daemon: %q", out)
	}
	var v struct {
		Version string
		Daemon  *api.Version
	}
	if err := json.Unmarshal([]byte(e.ok("version", "--json")), &v); err != nil || v.Version != "1.2.3" || v.Daemon == nil || v.Daemon.Pid != 77 {
		t.Errorf("version --json: %+v %v", v, err)
	}
}

func TestHelp(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{nil, {"--help"}, {"help"}} {
		out := e.ok(args...)
		for _, c := range []string{"start", "ls", "logs", "crashes", "startup", "kill"} {
			if !strings.Contains(out, "  "+c+" ") {
				t.Errorf("keel %v: help does not list %s:\n%s", args, c, out)
			}
		}
	}
	if out := e.ok("start", "--help"); !strings.Contains(out, "--kill-timeout duration") || !strings.Contains(out, "-i, --instances int") {
		t.Errorf("start --help lacks the option flags:\n%s", out)
	}
}

func TestKillWithoutDaemon(t *testing.T) {
	e := newEnv(t)
	if out := e.ok("kill"); out != "no daemon is running\n" {
		t.Errorf("kill without a daemon: %q", out)
	}
	if _, err := os.Stat(filepath.Join(e.home, "keel.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kill started something: %v", err)
	}
}

func TestStartup(t *testing.T) {
	e := newEnv(t)
	exe, _ := os.Executable()
	e.deps.Exe = exe
	out := e.ok("startup")
	for _, want := range []string{
		"ExecStart=" + exe + " daemon\n", "Environment=KEEL_HOME=" + e.home + "\n", "Restart=always\n",
		"KillMode=process\n", "Delegate=yes\n", "DelegateSubgroup=daemon\n", "User=root\n", "WantedBy=multi-user.target\n", "[Service]\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("unit lacks %q:\n%s", want, out)
		}
	}
}

func TestLogs(t *testing.T) {
	e := newEnv(t) // no daemon needed
	dir := filepath.Join(e.home, "logs")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "web-0-out.log"), []byte("2026-11-25T10:00:00.000000000Z | hello\n2026-11-25T10:00:02.000000000Z | world\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "web-0-err.log"), []byte("2026-11-25T10:00:01.000000000Z | oops\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "api-0-out.log"), []byte("2026-11-25T10:00:03.000000000Z | other\n"), 0o600)

	if out := e.ok("logs", "web", "--raw"); out != "hello\noops\nworld\n" {
		t.Errorf("logs web --raw: %q", out)
	}
	if out := e.ok("logs", "web", "--raw", "--err"); out != "oops\n" {
		t.Errorf("logs web --raw --err: %q", out)
	}
	if out := e.ok("logs", "--raw", "-n", "1"); !strings.Contains(out, "world\n") || !strings.Contains(out, "other\n") || strings.Contains(out, "hello") {
		t.Errorf("logs --raw -n 1: %q", out)
	}
	out := e.ok("logs", "web:0", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var first map[string]any
	if len(lines) != 3 || json.Unmarshal([]byte(lines[0]), &first) != nil || first["app"] != "web" || first["line"] != "hello" || first["stream"] != "out" {
		t.Errorf("logs --json: %q", out)
	}
	// Following ends cleanly when interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	var buf syncBuffer
	done := make(chan int, 1)
	go func() { done <- Run(ctx, []string{"logs", "web", "-f", "--raw"}, Stdio{Out: &buf, Err: &buf}, e.deps) }()
	poll.Until(t, 20*time.Second, "logs -f to print world", func() bool { return strings.Contains(buf.String(), "world") })
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("logs -f interrupted: exit %d, output %q", code, buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunForeground(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	script(t, dir, "srv")
	cfg := filepath.Join(dir, "keel.json")
	os.WriteFile(cfg, []byte(`{"apps":[{"name":"a","script":"./srv"},{"name":"b","script":"./srv"}]}`), 0o600)
	var gotHome string
	var gotApps []string
	var gotOpts RunOptions
	e.deps.RunForeground = func(_ context.Context, home string, apps []*spec.App, o RunOptions) error {
		gotHome, gotOpts = home, o
		for _, a := range apps {
			gotApps = append(gotApps, a.Name)
		}
		return nil
	}
	e.ok("run", cfg, "--only", "b")
	if gotHome != e.home || !slices.Equal(gotApps, []string{"b"}) {
		t.Errorf("RunForeground(%q, %v)", gotHome, gotApps)
	}
	if want := (RunOptions{LogFormat: "text", LogFiles: true}); gotOpts != want {
		t.Errorf("keel run's defaults: %+v, want %+v", gotOpts, want)
	}
	e.ok("run", cfg, "--health", "127.0.0.1:9616", "--log-format", "json", "--log-files=false")
	if want := (RunOptions{Health: "127.0.0.1:9616", LogFormat: "json"}); gotOpts != want {
		t.Errorf("keel run --health --log-format json --log-files=false: %+v, want %+v", gotOpts, want)
	}
	getenv := e.deps.Getenv
	e.deps.Getenv = func(k string) string {
		if k == "KEEL_HEALTH" {
			return ":7000"
		}
		return getenv(k)
	}
	e.ok("run", cfg)
	if gotOpts.Health != ":7000" {
		t.Errorf("KEEL_HEALTH=:7000 gave --health %q", gotOpts.Health)
	}
	e.ok("run", cfg, "--health", ":7001")
	if gotOpts.Health != ":7001" {
		t.Errorf("--health :7001 with KEEL_HEALTH=:7000 gave %q", gotOpts.Health)
	}
	if code, _, errs := e.run("run", cfg, "--log-format", "xml"); code != ExitUsage || !strings.Contains(errs, `--log-format "xml": want text or json`) {
		t.Errorf("--log-format xml: %d %q", code, errs)
	}
	e.deps.RunForeground = func(context.Context, string, []*spec.App, RunOptions) error {
		return errors.New("app a: did not stop within 5s")
	}
	code, _, errs := e.run("run", cfg)
	if code != 1 || oneLineErr(t, errs) != "keel: run "+cfg+": app a: did not stop within 5s" {
		t.Errorf("run failing: %d %q", code, errs)
	}
}

func TestDaemonCommand(t *testing.T) {
	e := newEnv(t)
	e.home = filepath.Join(e.home, "fresh")
	var got string
	e.deps.RunDaemon = func(_ context.Context, home string) error { got = home; return nil }
	e.ok("daemon")
	if got != e.home {
		t.Errorf("RunDaemon(%q), want %q", got, e.home)
	}
	if fi, err := os.Stat(e.home); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("KEEL_HOME not created 0700: %v", err)
	}
	e.deps.RunDaemon = func(context.Context, string) error { return errors.New("another daemon holds the lock") }
	code, _, errs := e.run("daemon")
	if code != 1 || oneLineErr(t, errs) != "keel: daemon: another daemon holds the lock" {
		t.Errorf("daemon failing: %d %q", code, errs)
	}
}

// TestAutoStart runs the CLI against an empty KEEL_HOME with the test
// binary as keel: the first commands, racing, start exactly one daemon;
// kill stops it and waits for it to be gone.
func TestAutoStart(t *testing.T) {
	t.Setenv(controltest.DaemonEnv, "ok")
	e := newEnv(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.deps.Exe = exe
	var wg sync.WaitGroup
	outs := make([]string, 3)
	codes := make([]int, 3)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, errb bytes.Buffer
			codes[i] = Run(context.Background(), []string{"ls", "--json"}, Stdio{Out: &out, Err: &errb}, e.deps)
			outs[i] = out.String() + errb.String()
		}()
	}
	wg.Wait()
	for i := range outs {
		if codes[i] != 0 || strings.TrimSpace(outs[i]) != "[]" {
			t.Errorf("racer %d: exit %d, output %q", i, codes[i], outs[i])
		}
	}
	won, _, err := controltest.Starts(e.home)
	if err != nil || len(won) != 1 {
		t.Fatalf("daemons that won: %q (%v), want 1", won, err)
	}
	if out := e.ok("kill"); out != "daemon stopped\n" {
		t.Errorf("kill: %q", out)
	}
	if out := e.ok("kill"); out != "no daemon is running\n" {
		t.Errorf("second kill: %q", out)
	}
}
