package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

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

// home returns a fresh KEEL_HOME.
func home(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "k")
}

func served(t *testing.T, b *controltest.Backend) *Client {
	t.Helper()
	h := home(t)
	if err := os.Mkdir(h, 0o700); err != nil {
		t.Fatal(err)
	}
	controltest.Serve(t, h, b)
	c := New(h)
	t.Cleanup(c.Close)
	return c
}

func TestMethods(t *testing.T) {
	inst := []api.Instance{{App: "web", Instance: 0, Pid: 10, Status: "online"}}
	b := &controltest.Backend{
		Instances: inst,
		Details:   []api.AppDetail{{Spec: &spec.App{Name: "web", Script: "/w"}, Desired: "running"}},
		Groups:    []api.CrashGroup{{ID: "g1", App: "web", Count: 3}},
		Detail:    api.CrashDetail{CrashGroup: api.CrashGroup{ID: "g1"}, Kind: "go"},
		Ver:       api.Version{Version: "v9", Pid: 99, Home: "/x"},
	}
	c := served(t, b)
	ctx := context.Background()
	web1 := spec.Target{App: "web", Instance: 1}

	check := func(what string, res api.Result, err error, msg string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.Message != msg || !reflect.DeepEqual(res.Instances, inst) {
			t.Errorf("%s: %+v, want message %q and the instances", what, res, msg)
		}
	}
	res, err := c.Start(ctx, []*spec.App{{Name: "web", Script: "/w"}, {Name: "api", Script: "/a"}})
	check("Start", res, err, "started web, api")
	res, err = c.Stop(ctx, web1)
	check("Stop", res, err, "stop web:1")
	res, err = c.Restart(ctx, spec.All)
	check("Restart", res, err, "restart all")
	res, err = c.Reload(ctx, spec.Target{App: "web", Instance: -1})
	check("Reload", res, err, "reload web")
	res, err = c.Delete(ctx, web1)
	check("Delete", res, err, "delete web:1")
	res, err = c.Scale(ctx, "web", 3)
	check("Scale", res, err, "scaled web to 3")
	res, err = c.Save(ctx)
	check("Save", res, err, "saved")
	res, err = c.Resurrect(ctx)
	check("Resurrect", res, err, "resurrected")

	l, err := c.List(ctx)
	if err != nil || !reflect.DeepEqual(l, inst) {
		t.Errorf("List: %+v %v", l, err)
	}
	d, err := c.Describe(ctx, web1)
	if err != nil || len(d) != 1 || d[0].Spec.Name != "web" || d[0].Desired != "running" {
		t.Errorf("Describe: %+v %v", d, err)
	}
	g, err := c.Crashes(ctx, "web")
	if err != nil || len(g) != 1 || g[0].Count != 3 {
		t.Errorf("Crashes: %+v %v", g, err)
	}
	if _, err := c.Crashes(ctx, ""); err != nil {
		t.Errorf("Crashes of every app: %v", err)
	}
	cd, err := c.Crash(ctx, "g1")
	if err != nil || cd.ID != "g1" || cd.Kind != "go" {
		t.Errorf("Crash: %+v %v", cd, err)
	}
	v, err := c.Version(ctx)
	if err != nil || v != b.Ver {
		t.Errorf("Version: %+v %v", v, err)
	}
	res, err = c.Kill(ctx)
	if err != nil || res.Message != "daemon stopped" {
		t.Errorf("Kill: %+v %v", res, err)
	}

	want := []string{
		"Start web,api", "Stop web:1", "Restart all", "Reload web", "Delete web:1",
		"Scale web 3", "Save", "Resurrect", "List", "Describe web:1", `Crashes "web"`,
		`Crashes ""`, "Crash g1", "Version", "Kill",
	}
	if got := b.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("backend calls:\n got %q\nwant %q", got, want)
	}
	if got := b.Started(); len(got) != 2 || got[1].Script != "/a" {
		t.Errorf("started apps: %+v", got)
	}
}

func TestEmptyAnswersAreEmptySlices(t *testing.T) {
	c := served(t, &controltest.Backend{})
	ctx := context.Background()
	l, err := c.List(ctx)
	if err != nil || l == nil || len(l) != 0 {
		t.Errorf("List: %#v %v, want an empty non-nil slice", l, err)
	}
	d, err := c.Describe(ctx, spec.All)
	if err != nil || d == nil || len(d) != 0 {
		t.Errorf("Describe: %#v %v", d, err)
	}
	g, err := c.Crashes(ctx, "")
	if err != nil || g == nil || len(g) != 0 {
		t.Errorf("Crashes: %#v %v", g, err)
	}
}

func TestDaemonErrors(t *testing.T) {
	b := &controltest.Backend{Errs: map[string]error{
		"Stop": &spec.NotFoundError{What: "app web"},
		"Save": errors.New("writing dump.json: disk full"),
	}}
	c := served(t, b)
	ctx := context.Background()

	_, err := c.Stop(ctx, spec.Target{App: "web", Instance: -1})
	var e *Error
	if !errors.As(err, &e) || e.Status != 404 || e.Message != "app web not found" || !IsNotFound(err) {
		t.Errorf("Stop: %#v, want *Error 404 \"app web not found\"", err)
	}
	_, err = c.Save(ctx)
	if !errors.As(err, &e) || e.Status != 500 || err.Error() != "writing dump.json: disk full" || IsNotFound(err) {
		t.Errorf("Save: %#v", err)
	}
	_, err = c.Crash(ctx, "nope")
	if !IsNotFound(err) || err.Error() != "crash nope not found" {
		t.Errorf("Crash of an unknown id: %v", err)
	}
	_, err = c.Scale(ctx, "bad name", 1)
	if !errors.As(err, &e) || e.Status != 400 {
		t.Errorf("Scale with a bad name: %#v, want a 400", err)
	}
}

func TestNoDaemon(t *testing.T) {
	h := home(t)
	c := New(h)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.List(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("List without a socket: %v, want ErrNoDaemon", err)
	}
	// A stale socket: the file exists but nothing listens.
	if err := os.Mkdir(h, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.Socket(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := c.Ping(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Ping on a stale socket: %v, want ErrNoDaemon", err)
	}
	if _, err := c.Kill(ctx); !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), c.Socket()) {
		t.Errorf("Kill on a stale socket: %v, want ErrNoDaemon naming the socket", err)
	}
}

func TestHome(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	if h, err := Home(env("KEEL_HOME", "/srv/keel", "HOME", "/root")); err != nil || h != "/srv/keel" {
		t.Errorf("KEEL_HOME set: %q %v", h, err)
	}
	if h, err := Home(env("HOME", "/home/u")); err != nil || h != "/home/u/.keel" {
		t.Errorf("HOME only: %q %v", h, err)
	}
	wd, _ := os.Getwd()
	if h, err := Home(env("KEEL_HOME", "rel")); err != nil || h != filepath.Join(wd, "rel") {
		t.Errorf("relative KEEL_HOME: %q %v", h, err)
	}
	if _, err := Home(env()); err == nil || !strings.Contains(err.Error(), "set KEEL_HOME") {
		t.Errorf("nothing set: %v", err)
	}
}

func TestEnsureDaemonAlreadyRunning(t *testing.T) {
	b := &controltest.Backend{}
	c := served(t, b)
	if err := c.EnsureDaemon(context.Background(), "/nonexistent/keel"); err != nil {
		t.Fatalf("EnsureDaemon with a daemon up: %v", err)
	}
	if calls := b.Calls(); len(calls) != 0 {
		t.Errorf("EnsureDaemon made requests: %q", calls)
	}
}

// killDaemon asks the fake daemon to exit and reaps it.
func killDaemon(t *testing.T, c *Client) {
	t.Helper()
	ctx := context.Background()
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if _, err := c.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	reap(t, v.Pid)
}

// reap waits for a child of the test to exit, with a deadline.
func reap(t *testing.T, pid int) {
	t.Helper()
	poll.Until(t, 20*time.Second, fmt.Sprintf("daemon %d to exit", pid), func() bool {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		return wpid == pid || errors.Is(err, unix.ECHILD)
	})
}

// TestEnsureDaemonRace starts the test binary as a fake daemon from
// several clients at once: every client must see the daemon, and exactly
// one daemon must win.
func TestEnsureDaemonRace(t *testing.T) {
	t.Setenv(controltest.DaemonEnv, "ok")
	h := home(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const racers = 3
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := New(h)
			defer c.Close()
			errs[i] = c.EnsureDaemon(context.Background(), exe)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	c := New(h)
	defer c.Close()
	won, lost, err := controltest.Starts(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(won) != 1 {
		t.Fatalf("%d daemons won the lock (%q), want 1", len(won), won)
	}
	t.Logf("%d daemon(s) lost the race and exited", lost)

	// The daemon is detached: its own session, cwd /, stdin /dev/null.
	f := strings.Fields(won[0])
	if len(f) != 5 || f[1] != f[2] || f[3] != "/" || f[4] != "/dev/null" {
		t.Errorf("daemon setup %q, want won <pid> <sid=pid> / /dev/null", won[0])
	}
	v, err := c.Version(context.Background())
	if err != nil || strconv.Itoa(v.Pid) != f[1] || v.Home != h {
		t.Errorf("Version: %+v %v; want pid %s and home %s", v, err, f[1], h)
	}
	fi, err := os.Stat(h)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("KEEL_HOME: %v %v, want mode 0700", fi.Mode(), err)
	}
	// A second EnsureDaemon does not start another one.
	if err := c.EnsureDaemon(context.Background(), exe); err != nil {
		t.Fatal(err)
	}
	if won2, _, _ := controltest.Starts(h); len(won2) != 1 {
		t.Errorf("a second EnsureDaemon started another daemon: %q", won2)
	}
	killDaemon(t, c)
	if err := c.Ping(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("after Kill: %v, want ErrNoDaemon", err)
	}
}

func TestEnsureDaemonReportsAFailingDaemon(t *testing.T) {
	t.Setenv(controltest.DaemonEnv, "fail")
	h := home(t)
	exe, _ := os.Executable()
	if err := os.Mkdir(h, 0o700); err != nil {
		t.Fatal(err)
	}
	// An earlier run's lines are not quoted.
	if err := os.WriteFile(filepath.Join(h, LogName), []byte("old line from yesterday\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := New(h)
	defer c.Close()
	err := c.EnsureDaemon(context.Background(), exe)
	if err == nil {
		t.Fatal("EnsureDaemon succeeded with a daemon that exits 3")
	}
	msg := err.Error()
	for _, want := range []string{"exited with status 3", "opening state.db: file is corrupted", LogName} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "yesterday") || strings.Contains(msg, "\n") {
		t.Errorf("error %q quotes old lines or spans lines", msg)
	}
}

// killHanging kills the "hang" fake daemon of h once it has said its pid.
func killHanging(t *testing.T, h string) {
	t.Helper()
	pid := 0
	poll.Until(t, 20*time.Second, "the hanging daemon to write its pid", func() bool {
		b, err := os.ReadFile(filepath.Join(h, "hang.pid"))
		p, perr := strconv.Atoi(string(b))
		pid = p
		return err == nil && perr == nil
	})
	unix.Kill(pid, unix.SIGKILL)
	reap(t, pid)
}

func TestEnsureDaemonTimesOut(t *testing.T) {
	t.Setenv(controltest.DaemonEnv, "hang")
	h := home(t)
	exe, _ := os.Executable()
	c := New(h)
	defer c.Close()
	err := c.ensureDaemon(context.Background(), exe, 300*time.Millisecond)
	killHanging(t, h)
	if err == nil || !strings.Contains(err.Error(), "did not answer on "+c.Socket()+" within 300ms") {
		t.Fatalf("EnsureDaemon with a hanging daemon: %v, want a timeout", err)
	}
}

func TestEnsureDaemonBadExe(t *testing.T) {
	c := New(home(t))
	defer c.Close()
	err := c.EnsureDaemon(context.Background(), "/nonexistent/keel")
	if err == nil || !strings.Contains(err.Error(), "starting the daemon") {
		t.Fatalf("EnsureDaemon with a missing binary: %v", err)
	}
}

func TestEnsureDaemonHonoursContext(t *testing.T) {
	t.Setenv(controltest.DaemonEnv, "hang")
	h := home(t)
	exe, _ := os.Executable()
	c := New(h)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.EnsureDaemon(ctx, exe)
	killHanging(t, h)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("EnsureDaemon past its context's deadline: %v", err)
	}
}

// TestEnsureDaemonOutlivesADyingDaemon: the lock is held by a daemon on its
// way out (here, the test) when the client starts one; that one loses and
// exits 0, and the client must start another once the lock is free.
func TestEnsureDaemonOutlivesADyingDaemon(t *testing.T) {
	t.Setenv(controltest.DaemonEnv, "ok")
	h := home(t)
	if err := os.Mkdir(h, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(h, "daemon.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	c := New(h)
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.EnsureDaemon(context.Background(), exe) }()

	poll.Until(t, 20*time.Second, "a daemon to try and lose the lock", func() bool {
		_, lost, _ := controltest.Starts(h)
		return lost > 0
	})
	unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("EnsureDaemon: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("EnsureDaemon did not return")
	}
	if won, _, _ := controltest.Starts(h); len(won) != 1 {
		t.Fatalf("winners: %q, want 1", won)
	}
	killDaemon(t, c)
}

func TestRequestHonoursContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	b := &controltest.Backend{Hold: func(ctx context.Context) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}}
	c := served(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Stop(ctx, spec.All)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop past its deadline: %v, want context.DeadlineExceeded", err)
	}
}
