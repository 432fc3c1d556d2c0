package keeper

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

// eventTimeout bounds every wait for an event: generous, for a loaded
// machine and the race detector; a passing test never waits it out.
const eventTimeout = 30 * time.Second

// harness is one test's keel home and what it started. Its cleanup makes
// sure no keeper or app process outlives the test and no file is left in
// run/.
type harness struct {
	t    *testing.T
	home string
	exe  string

	mu     sync.Mutex
	idents []proc.Identity // every keeper and app the test saw
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessAt(t, t.TempDir())
}

func newHarnessAt(t *testing.T, home string) *harness {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, home: home, exe: exe}
	t.Cleanup(h.check)
	return h
}

// testLog passes the daemon side's log to t.Log while the test runs.
type testLog struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (l *testLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSpace(string(b)))
	}
	return len(b), nil
}

func (h *harness) spawner(listeners func(*spec.App, int) ([]*os.File, []string, error)) *Spawner {
	return h.spawnerWith(SpawnerConfig{Listeners: listeners})
}

// spawnerWith completes cfg with the harness's home, binary, log and env.
func (h *harness) spawnerWith(cfg SpawnerConfig) *Spawner {
	l := &testLog{t: h.t}
	h.t.Cleanup(func() { l.mu.Lock(); l.done = true; l.mu.Unlock() })
	cfg.Home = h.home
	cfg.Exe = h.exe
	cfg.Logger = slog.New(slog.NewTextHandler(l, nil))
	cfg.Env = []string{"GORACE=atexit_sleep_ms=0"}
	s := NewSpawner(cfg)
	h.t.Cleanup(func() { s.Close() })
	return s
}

// app is a helper app of the test binary.
func app(name string, args ...string) *spec.App {
	a := &spec.App{
		Name:        "t-" + name,
		Script:      os.Args[0],
		Interpreter: "none",
		Args:        append([]string{helperArg, name}, args...),
		Env:         map[string]string{"FOO": "bar"},
	}
	if !filepath.IsAbs(a.Script) {
		a.Script, _ = os.Executable()
	}
	a.Normalize()
	return a
}

func (h *harness) spawn(s *Spawner, a *spec.App, instance int) *process {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	p, err := s.Spawn(ctx, supervisor.SpawnRequest{App: a, Instance: instance, Restarts: 0})
	if err != nil {
		h.t.Fatalf("Spawn: %v", err)
	}
	return h.track(p.(*process))
}

// track remembers the keeper and app of p for the final check.
func (h *harness) track(p *process) *process {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.idents = append(h.idents,
		proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart},
		proc.Identity{Pid: p.st.Pid, Start: p.st.PidStart})
	return p
}

// check runs at cleanup: every process the test saw must be gone (after
// a bounded wait: a released keeper exits on its own), and run/ empty.
func (h *harness) check() {
	t := h.t
	h.mu.Lock()
	idents := h.idents
	h.mu.Unlock()
	if t.Failed() {
		// No point waiting for a release that will not come.
		for _, id := range idents {
			id.KillGroup(syscall.SIGKILL)
			id.Signal(syscall.SIGKILL)
		}
	}
	for _, id := range idents {
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		err := id.WaitGone(ctx)
		cancel()
		if err != nil || id.Running() {
			t.Errorf("pid %d is still running after the test", id.Pid)
			id.KillGroup(syscall.SIGKILL)
			id.Signal(syscall.SIGKILL)
		}
	}
	ents, _ := os.ReadDir(RunDir(h.home))
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(RunDir(h.home), e.Name()))
		t.Errorf("left in run/: %s %s", e.Name(), b)
	}
}

// next returns p's next event.
func next(t *testing.T, p supervisor.Process) supervisor.Event {
	t.Helper()
	select {
	case ev, ok := <-p.Events():
		if !ok {
			t.Fatal("Events closed")
		}
		return ev
	case <-time.After(eventTimeout):
		t.Fatal("no event")
	}
	return supervisor.Event{}
}

// waitFor skips events until one of kind, and returns it.
func waitFor(t *testing.T, p supervisor.Process, kind supervisor.EventKind) supervisor.Event {
	t.Helper()
	for {
		ev := next(t, p)
		if ev.Kind == kind {
			return ev
		}
		if ev.Kind == supervisor.EventExit {
			t.Fatalf("exited (%v) while waiting for %v", ev.Exit, kind)
		}
	}
}

// finish stops p if it still runs, waits for its exit, checks that Events
// closes after it, and releases it.
func finish(t *testing.T, p supervisor.Process) spec.Exit {
	t.Helper()
	if err := p.Stop(syscall.SIGKILL, 0); err != nil {
		t.Errorf("Stop: %v", err)
	}
	return release(t, p)
}

// release waits for the exit, checks that Events closes after it, and
// releases p.
func release(t *testing.T, p supervisor.Process) spec.Exit {
	t.Helper()
	var ex spec.Exit
	for {
		ev := next(t, p)
		if ev.Kind == supervisor.EventExit {
			ex = ev.Exit
			break
		}
	}
	select {
	case _, ok := <-p.Events():
		if ok {
			t.Error("an event after the exit")
		}
	case <-time.After(eventTimeout):
		t.Error("Events not closed after the exit")
	}
	p.Release()
	return ex
}

// logLines returns the payloads of a log file's records (short lines only).
func logLines(t *testing.T, home, app string, instance int, stream string) []string {
	t.Helper()
	b, err := os.ReadFile(logs.Path(home, app, instance, stream))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rec := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		// time (30 bytes), " ", mark "|", " ", payload
		if len(rec) < 33 || rec[31] != '|' {
			t.Fatalf("unexpected record %q", rec)
		}
		out = append(out, string(rec[33:]))
	}
	return out
}

func gone(t *testing.T, id proc.Identity) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := id.WaitGone(ctx); err != nil {
		t.Fatalf("pid %d: %v", id.Pid, err)
	}
}
