package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"github.com/keel-run/keel/internal/api"
)

func TestStartListStopRestartDelete(t *testing.T) {
	e := newEnv(t)
	e.app("sleeper", "sleep", "-i", "2")
	l := e.waitFor("2 online", allStatus("sleeper", 2, "online"))
	pids := map[int]bool{}
	for _, in := range l {
		if !alive(in.Pid) || in.Restarts != 0 || in.LastExit != nil {
			t.Fatalf("fresh instance %+v", in)
		}
		pids[in.Pid] = true
	}
	if len(pids) != 2 {
		t.Fatalf("pids %v", pids)
	}

	// The table is for people; it names the app and its status.
	table := e.ok("ls")
	if !strings.Contains(table, "sleeper") || !strings.Contains(table, "online") {
		t.Fatalf("ls table:\n%s", table)
	}

	e.ok("stop", "sleeper:1")
	l = e.ls()
	for _, in := range l {
		if in.Instance == 1 {
			if in.Status != "stopped" || in.LastExit == nil || in.LastExit.Reason != "stop" {
				t.Fatalf("stopped instance %+v", in)
			}
		}
	}
	e.ok("restart", "sleeper")
	l = e.waitFor("2 online again", allStatus("sleeper", 2, "online"))
	for _, in := range l {
		if pids[in.Pid] {
			t.Fatalf("instance %d kept pid %d across restart", in.Instance, in.Pid)
		}
		if in.Restarts != 1 {
			t.Fatalf("instance %d restarts = %d, want 1", in.Instance, in.Restarts)
		}
	}
	for pid := range pids {
		if alive(pid) {
			t.Fatalf("old pid %d still alive", pid)
		}
	}

	e.ok("delete", "sleeper")
	if l := e.ls(); len(l) != 0 {
		t.Fatalf("after delete: %+v", l)
	}
	r := e.keel("stop", "sleeper")
	if r.code != 1 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.Contains(r.err, "sleeper") {
		t.Fatalf("stop of a deleted app: exit %d, stderr %q", r.code, r.err)
	}
}

func TestCrashLoopBacksOffThenErrors(t *testing.T) {
	e := newEnv(t)
	e.app("crasher", "crash", "--restart-delay", "20ms", "--max-restarts", "3", "--min-uptime", "1m")
	l := e.waitFor("errored", allStatus("crasher", 1, "errored"))
	in := l[0]
	if in.Restarts != 3 {
		t.Fatalf("restarts = %d, want 3", in.Restarts)
	}
	if in.LastExit == nil || in.LastExit.Code == nil || *in.LastExit.Code != 3 {
		t.Fatalf("last exit %+v", in.LastExit)
	}
	if !strings.Contains(in.Reason, "gave up after 4 unstable runs") {
		t.Fatalf("reason %q", in.Reason)
	}
	// The app's stderr is in its log.
	logs := e.ok("logs", "crasher", "--err", "--raw", "--lines", "100")
	if got := strings.Count(logs, "fatal: cannot open config"); got != 4 {
		t.Fatalf("stderr lines in log = %d, want 4:\n%s", got, logs)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	e := newEnv(t)
	e.app("stubborn", "ignoreterm", "--kill-timeout", "300ms")
	l := e.waitFor("online", allStatus("stubborn", 1, "online"))
	pid := l[0].Pid
	// Give the app time to install its handler: wait for its log line.
	poll.Until(t, 10*time.Second, "the app to say it ignores SIGTERM", func() bool {
		return strings.Contains(e.ok("logs", "stubborn", "--raw"), "ignoring SIGTERM")
	})
	e.ok("stop", "stubborn")
	l = e.ls()
	ex := l[0].LastExit
	if l[0].Status != "stopped" || ex == nil || ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("after stop: %+v exit %+v", l[0], ex)
	}
	if alive(pid) {
		t.Fatalf("pid %d survived", pid)
	}
}

func TestLogsKeepEveryLine(t *testing.T) {
	for _, crash := range []string{"0", "1"} {
		t.Run("crash="+crash, func(t *testing.T) {
			e := newEnv(t)
			const n = 200000
			e.app("printer", "lines", "--restart", "never", "--env", "LINES_N="+strconv.Itoa(n), "--env", "LINES_CRASH="+crash)
			e.waitFor("stopped", allStatus("printer", 1, "stopped"))
			out := e.ok("logs", "printer", "--raw", "--lines", strconv.Itoa(n+10))
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != n {
				t.Fatalf("got %d lines, want %d", len(lines), n)
			}
			for i, l := range lines {
				if l != "line "+strconv.Itoa(i+1) {
					t.Fatalf("line %d is %q", i+1, l)
				}
			}
		})
	}
}

func TestBadConfigIsRefusedWhole(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keel.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: good
    script: %s
  - name: bad
    script: %s
    instances: lots
`, os.Args[0], os.Args[0])), 0o644)
	r := e.keel("start", cfg)
	if r.code != 1 {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
	if !strings.Contains(r.err, "keel.yaml:6") || !strings.Contains(r.err, "instances") {
		t.Fatalf("error does not name file, line and key: %q", r.err)
	}
	if l := e.ls(); len(l) != 0 {
		t.Fatalf("something started: %+v", l)
	}
	r = e.keel("start", filepath.Join(dir, "missing.js"))
	if r.code != 1 || !strings.Contains(r.err, "missing.js") {
		t.Fatalf("missing script: exit %d, stderr %q", r.code, r.err)
	}
	if l := e.ls(); len(l) != 0 {
		t.Fatalf("something started: %+v", l)
	}
	if r := e.keel("frobnicate"); r.code != 2 {
		t.Fatalf("unknown command: exit %d", r.code)
	}
}

// SIGKILL of the daemon leaves the apps running; the next command brings
// the daemon back, which adopts them (same pids, no duplicates) and starts
// again any that died while it was down.
func TestDaemonSIGKILLRecovery(t *testing.T) {
	e := newEnv(t)
	e.app("svc", "sleep", "-i", "2")
	before := e.waitFor("2 online", allStatus("svc", 2, "online"))
	dpid := e.killDaemon()
	for _, in := range before {
		if !alive(in.Pid) {
			t.Fatalf("instance %d (pid %d) died with the daemon", in.Instance, in.Pid)
		}
	}
	// One instance dies while nobody supervises.
	victim := before[1]
	syscall.Kill(victim.Pid, syscall.SIGKILL)
	poll.Until(t, 10*time.Second, "the victim to die", func() bool { return !alive(victim.Pid) })

	start := time.Now()
	after := e.waitFor("2 online after recovery", allStatus("svc", 2, "online"))
	took := time.Since(start)
	if e.daemonPid() == dpid {
		t.Fatal("daemon pid unchanged")
	}
	byInst := map[int]api.Instance{}
	for _, in := range after {
		byInst[in.Instance] = in
	}
	if byInst[before[0].Instance].Pid != before[0].Pid {
		t.Fatalf("instance %d was not adopted: pid %d, was %d", before[0].Instance, byInst[before[0].Instance].Pid, before[0].Pid)
	}
	if n := byInst[victim.Instance]; n.Pid == victim.Pid || !alive(n.Pid) {
		t.Fatalf("dead instance not restarted: %+v", n)
	}
	t.Logf("recovered in %s", took)
	// No duplicates: exactly the two instances' processes run the app.
	count := 0
	for _, pid := range processesOf(e.home) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if strings.Contains(string(b), "KEEL_E2E_APP=sleep") {
			count++
		}
	}
	if count != 2 {
		t.Fatalf("%d app processes running, want 2", count)
	}
}

// keel kill with no daemon (it was SIGKILLed) still stops every app its
// keepers run, also one that ignores SIGTERM, and leaves no process of
// this KEEL_HOME behind.
func TestKillWithoutADaemonStopsWhatItsKeepersRun(t *testing.T) {
	e := newEnv(t)
	e.app("svc", "sleep", "-i", "2")
	e.app("stubborn", "ignoreterm", "--kill-timeout", "300ms")
	e.waitFor("3 online", func(l []api.Instance) bool {
		return allStatus("svc", 2, "online")(l) && allStatus("stubborn", 1, "online")(l)
	})
	e.killDaemon()
	if n := len(processesOf(e.home)); n < 5 { // 3 apps, 2 keepers
		t.Fatalf("%d processes after the daemon's SIGKILL, want the apps and keepers", n)
	}
	out := e.ok("kill")
	if !strings.Contains(out, "stopped the 3 instance(s)") {
		t.Fatalf("keel kill said %q", out)
	}
	if left := processesOf(e.home); len(left) != 0 {
		t.Fatalf("processes left after keel kill: %v", left)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.home, "run")); len(ents) != 0 {
		t.Fatalf("run/ holds %d files after keel kill", len(ents))
	}
	if out := e.ok("kill"); out != "no daemon is running\n" {
		t.Fatalf("a second keel kill said %q", out)
	}
}

func TestSharedSocketAndActivationEnv(t *testing.T) {
	e := newEnv(t)
	e.app("web", "serve", "-i", "2", "--listen", "127.0.0.1:0", "--ready", "notify")
	e.waitFor("2 online", allStatus("web", 2, "online"))
	var det []api.AppDetail
	out := e.ok("describe", "web", "--json")
	if err := jsonUnmarshal(out, &det); err != nil || len(det) != 1 || len(det[0].Sockets) != 1 {
		t.Fatalf("describe: %v %s", err, out)
	}
	url := "http://" + det[0].Sockets[0] + "/"
	seen := map[string]bool{}
	// A new connection per request: the kernel hands each to whichever
	// instance accepts first.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 500 && len(seen) < 2; i++ {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		seen[resp.Header.Get("X-Keel-Instance")] = true
	}
	if len(seen) != 2 {
		t.Fatalf("instances seen: %v", seen)
	}
}

func TestKillStopsEverything(t *testing.T) {
	e := newEnv(t)
	e.app("a", "sleep")
	e.app("b", "sleep", "-i", "2")
	l := e.waitFor("online", func(l []api.Instance) bool { return allStatus("a", 1, "online")(l) && allStatus("b", 2, "online")(l) })
	dpid := e.daemonPid()
	e.ok("kill")
	for _, in := range l {
		if !poll.Within(10*time.Second, func() bool { return !alive(in.Pid) }) {
			t.Fatalf("pid %d survived keel kill", in.Pid)
		}
	}
	if !poll.Within(10*time.Second, func() bool { return !alive(dpid) }) {
		t.Fatal("daemon survived keel kill")
	}
}

// Five runs of the same crash (different pids, goroutine ids, indexes)
// are one group of count 5 with the crashing frame on top.
func TestCrashesGroup(t *testing.T) {
	e := newEnv(t)
	e.app("panicky", "panic", "--restart-delay", "10ms", "--max-restarts", "4")
	l := e.waitFor("errored", allStatus("panicky", 1, "errored"))
	// Crashes are filed off the supervisor's loop, just after the exit.
	var groups []api.CrashGroup
	poll.Within(10*time.Second, func() bool {
		if err := jsonUnmarshal(e.ok("crashes", "--json"), &groups); err != nil {
			t.Fatal(err)
		}
		return len(groups) != 1 || groups[0].Count >= 5
	})
	if len(groups) != 1 {
		t.Fatalf("%d groups, want 1: %+v", len(groups), groups)
	}
	g := groups[0]
	if g.Count != 5 || g.App != "panicky" || !strings.HasPrefix(g.Title, "panic: runtime error: index out of range") {
		t.Fatalf("group %+v", g)
	}
	if !strings.Contains(g.LastStack, "panicInWorker") || !strings.Contains(g.LastStack, "goroutine") {
		t.Fatalf("last stack:\n%s", g.LastStack)
	}
	var det api.CrashDetail
	if err := jsonUnmarshal(e.ok("crash", g.ID, "--json"), &det); err != nil || det.ID != g.ID || len(det.Exits) != 5 {
		t.Fatalf("crash %s: %v %+v", g.ID, err, det)
	}
	var apps []api.AppDetail
	if err := jsonUnmarshal(e.ok("describe", "panicky", "--json"), &apps); err != nil || apps[0].LatestCrash == nil || apps[0].LatestCrash.ID != g.ID {
		t.Fatalf("describe: %v %+v", err, apps)
	}
	if !strings.Contains(l[0].Reason, "gave up") {
		t.Fatalf("ls reason %q", l[0].Reason)
	}
	human := e.ok("crash", g.ID)
	if !strings.Contains(human, "panicInWorker") {
		t.Fatalf("keel crash output:\n%s", human)
	}
	// The groups are kept across a crash of the daemon itself.
	e.killDaemon()
	var again []api.CrashGroup
	if err := jsonUnmarshal(e.ok("crashes", "panicky", "--json"), &again); err != nil || len(again) != 1 || again[0].ID != g.ID || again[0].Count != 5 {
		t.Fatalf("after a daemon restart: %v %+v", err, again)
	}
}

// on_crash runs once for a new crash group; a crash loop of the same
// crash does not flood it.
func TestOnCrashHookFiresOncePerGroup(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "crashes.jsonl")
	hook := "tr -d '\\n' >> " + out + "; echo >> " + out
	e.app("hooked", "crash", "--restart-delay", "10ms", "--max-restarts", "3", "--on-crash", hook)
	e.waitFor("errored", allStatus("hooked", 1, "errored"))
	// Every crash filed (each a Notify decision), then keel kill, which
	// waits for hook runs under way: the file is final.
	poll.Until(t, 10*time.Second, "the four crashes to be filed", func() bool {
		var gs []api.CrashGroup
		if err := jsonUnmarshal(e.ok("crashes", "--json"), &gs); err != nil {
			t.Fatal(err)
		}
		return len(gs) == 1 && gs[0].Count == 4
	})
	e.ok("kill")
	b, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 1 || lines[0] == "" {
		t.Fatalf("hook ran %d times: %q", len(lines), lines)
	}
	var n struct {
		Event string         `json:"event"`
		New   bool           `json:"new"`
		Group api.CrashGroup `json:"group"`
	}
	if err := jsonUnmarshal(lines[0], &n); err != nil || n.Event != "crash" || !n.New || n.Group.App != "hooked" || !strings.Contains(n.Group.Title, "cannot open config") {
		t.Fatalf("hook got %v %+v from %q", err, n, lines[0])
	}
}

// A descriptor the CLI inherits (a shell's stray fd without close-on-exec)
// reaches neither the daemon it starts nor the keepers and apps.
func TestStrayDescriptorsDoNotLeak(t *testing.T) {
	e := newEnv(t)
	stray, err := os.Create(filepath.Join(t.TempDir(), "stray-fd-marker"))
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	cmd := exec.Command(os.Args[0], "start", os.Args[0], "--name", "clean", "--env", "KEEL_E2E_APP=sleep")
	cmd.Env = append(os.Environ(), "KEEL_E2E_MAIN=1", "KEEL_HOME="+e.home, "GORACE=atexit_sleep_ms=0")
	cmd.ExtraFiles = []*os.File{stray} // fd 3 in the CLI, not close-on-exec
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	e.waitFor("online", allStatus("clean", 1, "online"))
	for _, pid := range processesOf(e.home) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); target == stray.Name() {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				t.Fatalf("pid %d (%q) holds the CLI's stray descriptor as fd %s", pid, b, fd.Name())
			}
		}
	}
}

// The daemon runs on two Ps however many CPUs the box has (here
// GOMAXPROCS=8 stands in for a big box), and its apps still get the
// GOMAXPROCS their start gave.
func TestDaemonRunsOnTwoProcs(t *testing.T) {
	e := newEnv(t)
	many := []string{"GOMAXPROCS=8"}
	if r := e.keelWith(many, "ls"); r.code != 0 {
		t.Fatalf("keel ls: exit %d: %s", r.code, r.err)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", e.daemonPid()))
	if err != nil {
		t.Fatal(err)
	}
	if env := strings.Split(string(environ), "\x00"); !slices.Contains(env, "GOMAXPROCS=2") {
		t.Errorf("the daemon did not start again on 2 Ps: its GOMAXPROCS is not 2")
	}
	start := []string{"start", os.Args[0], "--name", "procs", "--env", "KEEL_E2E_APP=procs"}
	if r := e.keelWith(many, start...); r.code != 0 {
		t.Fatalf("keel start: exit %d: %s", r.code, r.err)
	}
	want := `GOMAXPROCS "8" set true, marked false`
	poll.Until(t, 10*time.Second, "the app to print its GOMAXPROCS", func() bool {
		return strings.Contains(e.ok("logs", "procs", "--raw"), want)
	})
}

// An app gets the environment of the `keel start` that defined it, as
// under pm2, not the one the daemon happened to start with; and keeps it
// across a restart.
func TestAppGetsTheStartersEnvironment(t *testing.T) {
	e := newEnv(t)
	// The daemon starts here, with a variable the later start lacks.
	if r := e.keelWith([]string{"KEEL_E2E_DAEMON=stale"}, "ls"); r.code != 0 {
		t.Fatalf("keel ls: exit %d: %s", r.code, r.err)
	}
	start := []string{"start", os.Args[0], "--name", "envy", "--env", "KEEL_E2E_APP=env"}
	if r := e.keelWith([]string{"KEEL_E2E_SHELL=fresh"}, start...); r.code != 0 {
		t.Fatalf("keel start: exit %d: %s", r.code, r.err)
	}
	want := `from the shell: "fresh", from the daemon: ""`
	poll.Until(t, 10*time.Second, "the app to print its environment", func() bool {
		return strings.Contains(e.ok("logs", "envy", "--raw"), want)
	})
	e.waitFor("online", allStatus("envy", 1, "online"))
	e.ok("restart", "envy") // from an environment without the variable
	poll.Until(t, 10*time.Second, "the restarted app to print its environment", func() bool {
		return strings.Count(e.ok("logs", "envy", "--raw"), want) == 2
	})
	// describe shows the app's definition, not the shell's environment.
	if out := e.ok("describe", "envy", "--json"); strings.Contains(out, "KEEL_E2E_SHELL") || strings.Contains(out, "shell_env") {
		t.Errorf("describe shows the start's environment:\n%.500s", out)
	}
}
