package keeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

func TestSpawnLogsAndGracefulStop(t *testing.T) {
	h := newHarness(t)
	s := h.spawner(nil)
	a := app("serve")
	a.Ready = spec.ReadyNotify
	p := h.spawn(s, a, 2)

	if !(proc.Identity{Pid: p.Pid(), Start: p.st.PidStart}).Running() {
		t.Fatal("the app is not running after Spawn")
	}
	if p.Started().IsZero() || p.ID() == "" {
		t.Fatalf("Started %v, ID %q", p.Started(), p.ID())
	}
	if ev := next(t, p); ev.Kind != supervisor.EventReady {
		t.Fatalf("first event %v, want ready", ev.Kind)
	}
	notifySocket := filepath.Join(RunDir(h.home), p.ID()+".notify")
	if ev := next(t, p); ev.Kind != supervisor.EventStatus || ev.Text != "NOTIFY_SOCKET="+notifySocket {
		t.Fatalf("event %v %q, want status NOTIFY_SOCKET=%s", ev.Kind, ev.Text, notifySocket)
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	if err := p.Stop(syscall.SIGTERM, eventTimeout); err != nil {
		t.Fatal(err)
	}
	ex := release(t, p)
	if ex.Signal == nil || *ex.Signal != "SIGTERM" || ex.Reason != "" {
		t.Fatalf("exit %v, want signal SIGTERM", ex)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after the exit: %v, want os.ErrProcessDone", err)
	}
	if err := p.Stop(syscall.SIGTERM, 0); err != nil {
		t.Fatalf("Stop after the exit: %v", err)
	}

	out := logLines(t, h.home, a.Name, 2, "out")
	want := "hello out KEEL_APP=t-serve KEEL_INSTANCE=2 NODE_APP_INSTANCE=2 FOO=bar LISTEN_FDS="
	if len(out) != 1 || out[0] != want {
		t.Fatalf("stdout log %q, want %q", out, want)
	}
	if errLog := logLines(t, h.home, a.Name, 2, "err"); len(errLog) != 1 || errLog[0] != "hello err" {
		t.Fatalf("stderr log %q", errLog)
	}
}

func TestDaemonEnvironmentDoesNotLeak(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("LISTEN_FDS", "3")
	h := newHarness(t)
	a := app("serve")
	a.Ready = spec.ReadyNotify
	p := h.spawn(h.spawner(nil), a, 0)
	waitFor(t, p, supervisor.EventReady)
	st := waitFor(t, p, supervisor.EventStatus)
	finish(t, p)
	if want := "NOTIFY_SOCKET=" + filepath.Join(RunDir(h.home), p.ID()+".notify"); st.Text != want {
		t.Fatalf("the app saw %s, want %s", st.Text, want)
	}
	out := logLines(t, h.home, "t-serve", 0, "out")
	if len(out) != 1 || !strings.HasSuffix(out[0], " LISTEN_FDS=") {
		t.Fatalf("the app saw the daemon's sockets: %q", out)
	}
}

func TestListenFdsReachTheApp(t *testing.T) {
	h := newHarness(t)
	var files []*os.File
	var want []string
	for _, name := range []string{"admin", "web"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.(*net.TCPListener).File()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
		want = append(want, name+"="+l.Addr().String())
	}
	s := h.spawner(func(*spec.App, int) ([]*os.File, []string, error) {
		return files, []string{"admin", "web"}, nil
	})
	// Twice: through a freshly started keeper and through the standby.
	for i := 0; i < 2; i++ {
		a := app("activation")
		p := h.spawn(s, a, i)
		if ex := release(t, p); !ex.Clean() {
			t.Fatalf("exit %v", ex)
		}
		if got := logLines(t, h.home, a.Name, i, "out"); len(got) != 1 || got[0] != strings.Join(want, " ") {
			t.Fatalf("the app's activation saw %q, want %q", got, strings.Join(want, " "))
		}
		s.wg.Wait()
	}
}

func TestKeeperHoldsNothingOfTheDaemon(t *testing.T) {
	h := newHarness(t)
	p := h.spawn(h.spawner(nil), app("sleep"), 0)
	dir := "/proc/" + strconv.Itoa(p.st.KeeperPid) + "/fd/"
	want := []string{"/dev/null", "/dev/null", keeperLog(h.home, &p.st)}
	for fd, w := range want {
		if got, err := os.Readlink(dir + strconv.Itoa(fd)); err != nil || got != w {
			t.Errorf("keeper fd %d is %q (%v), want %s", fd, got, err, w)
		}
	}
	finish(t, p)
}

func TestKeeperStopsItsAppOnSIGTERM(t *testing.T) {
	h := newHarness(t)
	a := app("notify")
	a.Ready = spec.ReadyNotify
	p := h.spawn(h.spawner(nil), a, 0)
	waitFor(t, p, supervisor.EventReady)
	keeper := proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart}
	if err := keeper.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The app stops gracefully (it says so), its exit is reported, and
	// the keeper goes without waiting for a release.
	waitFor(t, p, supervisor.EventStopping)
	if ex := release(t, p); !ex.Clean() || ex.Reason != "" {
		t.Fatalf("exit %v, want a clean exit", ex)
	}
	gone(t, keeper)
}

func TestASlowConsumerStallsNothing(t *testing.T) {
	h := newHarness(t)
	a := app("spam")
	a.Ready = spec.ReadyNotify
	p := h.spawn(h.spawner(nil), a, 0)
	// Nobody reads Events while a thousand statuses arrive; commands
	// still get their answers.
	for i := 0; i < 50; i++ {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	last := ""
	for {
		ev := next(t, p)
		if ev.Kind == supervisor.EventReady {
			break
		}
		if ev.Kind != supervisor.EventStatus {
			t.Fatalf("event %v", ev.Kind)
		}
		if n, _ := strconv.Atoi(ev.Text); n <= atoi(last) {
			t.Fatalf("status %s after %s", ev.Text, last)
		}
		last = ev.Text
	}
	if last != "1000" {
		t.Fatalf("last status before ready %q, want 1000", last)
	}
	finish(t, p)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func TestStopEscalatesToSIGKILLOfTheGroup(t *testing.T) {
	h := newHarness(t)
	a := app("stubborn")
	a.Ready = spec.ReadyNotify
	p := h.spawn(h.spawner(nil), a, 0)
	st := waitFor(t, p, supervisor.EventStatus)
	pid, err := strconv.Atoi(strings.TrimPrefix(st.Text, "grandchild "))
	if err != nil {
		t.Fatalf("status %q", st.Text)
	}
	grandchild, err := proc.Identify(pid)
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.idents = append(h.idents, grandchild)
	h.mu.Unlock()

	if err := p.Stop(syscall.SIGTERM, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ex := release(t, p)
	if ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("exit %v, want SIGKILL after the timeout", ex)
	}
	gone(t, grandchild)
}

func TestReadyNotify(t *testing.T) {
	h := newHarness(t)
	a := app("notify")
	a.Ready = spec.ReadyNotify
	p := h.spawn(h.spawner(nil), a, 0)
	// Status "warming up", ready, status "serving" — or, when the app said
	// all that before the daemon connected, the hello's summary of it:
	// ready, status "serving".
	var got []string
	for len(got) == 0 || got[len(got)-1] != "status serving" {
		ev := next(t, p)
		got = append(got, ev.Kind.String()+" "+ev.Text)
	}
	full := []string{"status warming up", "ready ", "status serving"}
	if !slices.Equal(got, full) && !slices.Equal(got, full[1:]) {
		t.Fatalf("events %q, want %q or its end", got, full)
	}
	if err := p.Stop(syscall.SIGTERM, eventTimeout); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, p); ev.Kind != supervisor.EventStopping {
		t.Fatalf("event %v, want stopping", ev.Kind)
	}
	if ex := release(t, p); !ex.Clean() {
		t.Fatalf("exit %v", ex)
	}
}

// boundSocket reserves a port on 127.0.0.1 without listening: a dial is
// refused until the app, which inherits it as fd 3, calls listen.
func boundSocket(t *testing.T) (*os.File, int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "bound")
	t.Cleanup(func() { f.Close() })
	return f, sa.(*unix.SockaddrInet4).Port
}

func TestReadyProbes(t *testing.T) {
	for _, kind := range []string{"tcp", "http"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t)
			f, port := boundSocket(t)
			s := h.spawner(func(*spec.App, int) ([]*os.File, []string, error) {
				return []*os.File{f}, []string{"web"}, nil
			})
			fifo := filepath.Join(t.TempDir(), "go")
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			a := app("listen-on-go", kind, fifo)
			a.Ready = "tcp://127.0.0.1:" + strconv.Itoa(port)
			if kind == "http" {
				a.Ready = "http://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
			}
			p := h.spawn(s, a, 0)
			// Nothing listens yet, so nothing can be ready.
			select {
			case ev := <-p.Events():
				t.Fatalf("event %v before the app listens", ev.Kind)
			default:
			}
			opened := make(chan error, 1)
			go func() {
				// Blocks until the app opened its end: no race with its start.
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err == nil {
					_, err = f.Write([]byte{1})
					f.Close()
				}
				opened <- err
			}()
			select {
			case err := <-opened:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(eventTimeout):
				t.Fatal("the app never opened the FIFO")
			}
			if ev := next(t, p); ev.Kind != supervisor.EventReady {
				t.Fatalf("event %v, want ready", ev.Kind)
			}
			finish(t, p)
		})
	}
}

func TestReadyThroughTheNodeIPCSeam(t *testing.T) {
	h := newHarness(t)
	a := app("node-ready", "ready")
	a.Ready = spec.ReadyMessage
	p := h.spawn(h.spawner(nil), a, 0)
	if ev := next(t, p); ev.Kind != supervisor.EventReady {
		t.Fatalf("event %v, want ready", ev.Kind)
	}
	finish(t, p)
}

// crashText is a fatal error as a Node app prints it.
const crashText = "/app/server.js:3\n  throw new Error('boom');\n  ^\n\nError: boom\n    at Timeout._onTimeout (/app/server.js:3:9)\n\nNode.js v20.20.2\n"

// A Node app's graceful crash reaches the daemon as EventCrashing at once,
// with the error it printed, and an app that then never exits is SIGKILLed
// soon after kill_timeout.
func TestGracefulCrashIsReportedAndBounded(t *testing.T) {
	h := newHarness(t)
	a := app("node-ready", "ready", "crashing "+crashText)
	a.Ready = spec.ReadyMessage
	a.KillTimeout = spec.Duration(100 * time.Millisecond)
	p := h.spawn(h.spawner(nil), a, 0)
	if ev := next(t, p); ev.Kind != supervisor.EventReady {
		t.Fatalf("event %v, want ready", ev.Kind)
	}
	if ev := next(t, p); ev.Kind != supervisor.EventCrashing || ev.Text != crashText {
		t.Fatalf("event %v %q, want crashing with %q", ev.Kind, ev.Text, crashText)
	}
	ev := next(t, p)
	if ev.Kind != supervisor.EventExit || ev.Exit.Signal == nil || *ev.Exit.Signal != "SIGKILL" {
		t.Fatalf("event %v %v, want the exit by SIGKILL", ev.Kind, ev.Exit)
	}
	p.Release()
}

// A daemon that adopts a keeper whose app is draining after a graceful
// crash hears of the crash and its text.
func TestGracefulCrashTextSurvivesADaemonRestart(t *testing.T) {
	h := newHarness(t)
	a := app("node-ready", "ready", "crashing "+crashText)
	a.Ready = spec.ReadyMessage
	a.KillTimeout = spec.Duration(time.Hour)
	s1 := h.spawner(nil)
	p1 := h.spawn(s1, a, 0)
	waitFor(t, p1, supervisor.EventCrashing)
	s1.Close()

	s2 := h.spawner(nil)
	survivors, err := s2.Survivors(context.Background())
	if err != nil || len(survivors) != 1 {
		t.Fatalf("Survivors: %d, %v", len(survivors), err)
	}
	p2 := h.track(survivors[0].Process.(*process))
	if ev := waitFor(t, p2, supervisor.EventCrashing); ev.Text != crashText {
		t.Fatalf("crashing %q after the daemon's restart, want %q", ev.Text, crashText)
	}
	finish(t, p2)
}

func TestReadyMessageWithoutNodeIPCIsReadyAtOnce(t *testing.T) {
	t.Setenv("KEEL_TEST_NO_NODE_IPC", "1")
	h := newHarness(t)
	a := app("sleep")
	a.Ready = spec.ReadyMessage
	p := h.spawn(h.spawner(nil), a, 0)
	if ev := next(t, p); ev.Kind != supervisor.EventReady {
		t.Fatalf("event %v, want ready", ev.Kind)
	}
	finish(t, p)
}

func TestSpawnErrorsLeaveNothingRunning(t *testing.T) {
	missing := app("sleep")
	missing.Script = "keel-no-such-program"
	badCwd := app("sleep")
	badCwd.Cwd = "/nonexistent/keel"
	notExec := app("sleep")
	notExec.Script = "/etc/hostname"
	for name, a := range map[string]*spec.App{"missing binary": missing, "bad cwd": badCwd, "not executable": notExec} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			before := children(t)
			// No standby: it would be a child too.
			_, err := h.spawnerWith(SpawnerConfig{NoStandby: true}).Spawn(context.Background(), supervisor.SpawnRequest{App: a})
			if err == nil {
				t.Fatal("Spawn succeeded")
			}
			t.Logf("error: %v", err)
			// Only new ones count: an earlier test's keeper may still be
			// on its way out.
			for _, c := range children(t) {
				if !slices.Contains(before, c) {
					t.Fatalf("children before %v; %s is new", before, c)
				}
			}
		})
	}
}

// children lists this process's children (live or zombie).
func children(t *testing.T) []string {
	t.Helper()
	var all []string
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		all = append(all, strings.Fields(string(b))...)
	}
	return all
}

func TestDaemonRestartAdoptsTheRunningProcess(t *testing.T) {
	h := newHarness(t)
	a := app("notify")
	a.Ready = spec.ReadyNotify
	s1 := h.spawner(nil)
	p1 := h.spawn(s1, a, 1)
	waitFor(t, p1, supervisor.EventReady)
	s1.Close() // the daemon dies: nothing is stopped

	s2 := h.spawner(nil)
	survivors, err := s2.Survivors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(survivors) != 1 {
		t.Fatalf("%d survivors, want 1", len(survivors))
	}
	sv := survivors[0]
	p2 := h.track(sv.Process.(*process))
	if sv.App != a.Name || sv.Instance != 1 || p2.Pid() != p1.Pid() || p2.ID() != p1.ID() || !p2.Started().Equal(p1.Started()) {
		t.Fatalf("survivor %+v pid %d id %s, want %s:1 pid %d id %s", sv, p2.Pid(), p2.ID(), a.Name, p1.Pid(), p1.ID())
	}
	// The state is replayed: ready, with its status.
	if ev := next(t, p2); ev.Kind != supervisor.EventReady {
		t.Fatalf("event %v, want ready", ev.Kind)
	}
	if ev := next(t, p2); ev.Kind != supervisor.EventStatus || ev.Text != "serving" {
		t.Fatalf("event %v %q, want status serving", ev.Kind, ev.Text)
	}
	// Survivors does not adopt what it holds already.
	if again, err := s2.Survivors(context.Background()); err != nil || len(again) != 0 {
		t.Fatalf("second Survivors: %d, %v", len(again), err)
	}
	if err := p2.Stop(syscall.SIGTERM, eventTimeout); err != nil {
		t.Fatal(err)
	}
	if ex := release(t, p2); !ex.Clean() {
		t.Fatalf("exit %v", ex)
	}
}

func TestExitWhileNoDaemonIsDeliveredOnAdoption(t *testing.T) {
	h := newHarness(t)
	s1 := h.spawner(nil)
	p1 := h.spawn(s1, app("sleep"), 0)
	s1.Close()

	appID := proc.Identity{Pid: p1.Pid(), Start: p1.st.PidStart}
	if err := appID.KillGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gone(t, appID)

	s2 := h.spawner(nil)
	survivors, err := s2.Survivors(context.Background())
	if err != nil || len(survivors) != 1 {
		t.Fatalf("Survivors: %d, %v", len(survivors), err)
	}
	p2 := survivors[0].Process
	ex := release(t, p2)
	if ex.Signal == nil || *ex.Signal != "SIGKILL" || ex.Reason != "" {
		t.Fatalf("exit %v, want SIGKILL", ex)
	}
}

func TestKeeperKilledTakesItsAppDown(t *testing.T) {
	h := newHarness(t)
	p := h.spawn(h.spawner(nil), app("sleep"), 0)
	waitFor(t, p, supervisor.EventReady)
	keeper := proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart}
	if err := keeper.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := release(t, p)
	if ex.Reason != ReasonKeeperLost || ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("exit %+v, want SIGKILL, reason %q", ex, ReasonKeeperLost)
	}
	gone(t, proc.Identity{Pid: p.Pid(), Start: p.st.PidStart})
}

func TestSurvivorsKillsTheOrphanOfADeadKeeper(t *testing.T) {
	h := newHarness(t)
	s1 := h.spawner(nil)
	p := h.spawn(s1, app("sleep"), 0)
	s1.Close()
	keeper := proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart}
	if err := keeper.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gone(t, keeper)
	appID := proc.Identity{Pid: p.Pid(), Start: p.st.PidStart}
	if !appID.Running() {
		t.Fatal("the app died with its keeper")
	}

	survivors, err := h.spawner(nil).Survivors(context.Background())
	if err != nil || len(survivors) != 0 {
		t.Fatalf("Survivors: %d, %v", len(survivors), err)
	}
	gone(t, appID)
}

func TestTwoHundredThousandLines(t *testing.T) {
	const n = 200_000
	h := newHarness(t)
	a := app("lines", strconv.Itoa(n))
	p := h.spawn(h.spawner(nil), a, 0)
	if ex := release(t, p); !ex.Clean() {
		t.Fatalf("exit %v", ex)
	}
	got := logLines(t, h.home, a.Name, 0, "out")
	if len(got) != n {
		t.Fatalf("%d lines in the log, want %d", len(got), n)
	}
	for i, l := range got {
		if l != "line "+strconv.Itoa(i+1) {
			t.Fatalf("line %d is %q", i+1, l)
		}
	}
}

func TestExitCodeAndReleaseBeforeExit(t *testing.T) {
	h := newHarness(t)
	a := app("exit", "7")
	p := h.spawn(h.spawner(nil), a, 0)
	p.Release() // before the exit: ignored
	if ev := next(t, p); ev.Kind != supervisor.EventReady {
		t.Fatalf("first event %v, want ready (ready: none)", ev.Kind)
	}
	ex := release(t, p)
	if ex.Code == nil || *ex.Code != 7 || ex.Signal != nil {
		t.Fatalf("exit %v, want code 7", ex)
	}
	if out := logLines(t, h.home, a.Name, 0, "out"); len(out) != 1 || out[0] != "exiting with 7" {
		t.Fatalf("log %q", out)
	}
}

func TestLongHomePath(t *testing.T) {
	home := t.TempDir()
	for len(home) < 2*maxSunPath {
		home = filepath.Join(home, "a-rather-long-directory-name")
	}
	h := newHarnessAt(t, home)
	a := app("notify")
	a.Ready = spec.ReadyNotify
	s1 := h.spawner(nil)
	p := h.spawn(s1, a, 0)
	waitFor(t, p, supervisor.EventReady)
	s1.Close()
	survivors, err := h.spawner(nil).Survivors(context.Background())
	if err != nil || len(survivors) != 1 {
		t.Fatalf("Survivors: %d, %v", len(survivors), err)
	}
	p2 := survivors[0].Process
	if err := p2.Stop(syscall.SIGTERM, eventTimeout); err != nil {
		t.Fatal(err)
	}
	release(t, p2)
}

// The standby keeper takes the first instance of the next app; further
// instances of an app go to that app's keeper process.
func TestStandbyKeeper(t *testing.T) {
	h := newHarness(t)
	s := h.spawner(nil)
	p1 := h.spawn(s, app("sleep"), 0)
	s.wg.Wait() // the standby started after p1 took the first keeper
	s.mu.Lock()
	standby := s.standby
	s.mu.Unlock()
	if standby == nil {
		t.Fatal("no standby keeper")
	}
	p2 := h.spawn(s, app("sleep"), 1)
	if p2.st.KeeperPid != p1.st.KeeperPid || p2.st.Host == "" || p2.st.Host != p1.st.Host {
		t.Fatalf("the app's second instance runs under keeper %d (%s), the first under %d (%s)",
			p2.st.KeeperPid, p2.st.Host, p1.st.KeeperPid, p1.st.Host)
	}
	other := app("sleep")
	other.Name = "t-other"
	p3 := h.spawn(s, other, 0)
	if p3.st.Host != standby.id || p3.st.KeeperPid != standby.cmd.Process.Pid {
		t.Fatalf("another app got keeper %s, not the standby %s", p3.st.Host, standby.id)
	}
	s.wg.Wait()
	s.mu.Lock()
	next := s.standby
	s.mu.Unlock()
	if next == nil {
		t.Fatal("no new standby")
	}
	finish(t, p1)
	finish(t, p2)
	finish(t, p3)
	// Close ends the standby, which created nothing.
	s.Close()
	select {
	case <-next.reaped:
	default:
		t.Fatal("the standby keeper still runs after Close")
	}
}

func TestStaleStandbyIsReplaced(t *testing.T) {
	h := newHarness(t)
	s := h.spawner(nil)
	finish(t, h.spawn(s, app("sleep"), 0))
	s.wg.Wait()
	s.mu.Lock()
	standby := s.standby
	s.mu.Unlock()
	if err := standby.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-standby.reaped
	p := h.spawn(s, app("sleep"), 0)
	if p.ID() == standby.id {
		t.Fatal("a dead standby was used")
	}
	finish(t, p)
}

// BenchmarkSpawn measures keel's own start overhead: from the Spawn call
// until the app's pid is known (the keeper started — or the standby keeper
// took the request —, the app spawned, the keeper's socket connected and
// its hello read).
func BenchmarkSpawn(b *testing.B) {
	for _, standby := range []bool{true, false} {
		b.Run(fmt.Sprintf("standby=%v", standby), func(b *testing.B) {
			home := b.TempDir()
			exe, _ := os.Executable()
			s := NewSpawner(SpawnerConfig{Home: home, Exe: exe, NoStandby: !standby, Env: []string{"GORACE=atexit_sleep_ms=0"}})
			defer s.Close()
			a := app("sleep")
			for b.Loop() {
				p, err := s.Spawn(context.Background(), supervisor.SpawnRequest{App: a})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				keeper := proc.Identity{Pid: p.(*process).st.KeeperPid, Start: p.(*process).st.KeeperStart}
				p.Stop(syscall.SIGKILL, 0)
				for ev := range p.Events() {
					if ev.Kind == supervisor.EventExit {
						p.Release()
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
				keeper.WaitGone(ctx)
				cancel()
				s.wg.Wait() // the next standby is up, as it would be between crashes
				b.StartTimer()
			}
		})
	}
}

func TestReconnectAfterADroppedConnection(t *testing.T) {
	h := newHarness(t)
	a := app("notify")
	a.Ready = spec.ReadyNotify
	p := h.spawn(h.spawner(nil), a, 0)
	waitFor(t, p, supervisor.EventReady)
	waitFor(t, p, supervisor.EventStatus)
	// The connection ends under the daemon's reading (as when a keeper
	// drops a daemon that does not read): the process reconnects.
	p.mu.Lock()
	old := p.conn
	rc, err := old.SyscallConn()
	if err == nil {
		rc.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
	p.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, eventTimeout, "the process to reconnect", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.conn != nil && p.conn != old
	})
	// Its own end closed under it: the next command's write fails, and
	// the command goes over a new connection.
	p.mu.Lock()
	p.conn.Close()
	p.mu.Unlock()
	// The process reconnects; commands work; the replayed hello repeats
	// nothing already delivered.
	if err := p.Stop(syscall.SIGTERM, eventTimeout); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, p); ev.Kind != supervisor.EventStopping {
		t.Fatalf("event %v %q, want stopping", ev.Kind, ev.Text)
	}
	if ex := release(t, p); !ex.Clean() {
		t.Fatalf("exit %v", ex)
	}
}

// A process an earlier daemon asked to stop is adopted as stopping (and
// ready): it takes no new connections from the new daemon's supervisor,
// which steers by what the process says (supervisor.Config.Serving).
func TestAdoptedProcessAskedToStopIsStopping(t *testing.T) {
	h := newHarness(t)
	a := app("stubborn") // ignores SIGTERM
	a.Ready = spec.ReadyNotify
	s1 := h.spawnerWith(SpawnerConfig{})
	p1 := h.spawn(s1, a, 1)
	waitFor(t, p1, supervisor.EventReady)
	// Synchronous, so the keeper has the stop before the daemon dies.
	if _, err := p1.call(command{Cmd: cmdStop, Signal: "SIGTERM", TimeoutMs: time.Minute.Milliseconds()}, false); err != nil {
		t.Fatal(err)
	}
	s1.Close()

	s2 := h.spawnerWith(SpawnerConfig{})
	survivors, err := s2.Survivors(context.Background())
	if err != nil || len(survivors) != 1 {
		t.Fatalf("Survivors: %d, %v", len(survivors), err)
	}
	p2 := h.track(survivors[0].Process.(*process))
	if ev := next(t, p2); ev.Kind != supervisor.EventStopping {
		t.Fatalf("first event of the adopted process %v, want stopping", ev.Kind)
	}
	if ev := next(t, p2); ev.Kind != supervisor.EventReady {
		t.Fatalf("second event of the adopted process %v, want ready", ev.Kind)
	}
	if ex := finish(t, p2); ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("exit %v, want SIGKILL", ex)
	}
}
