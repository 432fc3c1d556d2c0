package supervisor

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/spec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSpec(name string, mod ...func(*spec.App)) *spec.App {
	a := &spec.App{Name: name, Script: "/bin/" + name}
	for _, f := range mod {
		f(a)
	}
	return a
}

func TestStartGoesOnlineAtSpawnWithReadyNone(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("web", func(a *spec.App) { a.Instances = 2 }))
	p0, p1 := h.nextSpawn(), h.nextSpawn()
	if p0.inst == p1.inst {
		t.Fatalf("both spawns are instance %d", p0.inst)
	}
	in := h.waitStatus("web", 0, Online)
	h.waitStatus("web", 1, Online)
	if in.Pid == 0 || in.Restarts != 0 {
		t.Fatalf("online instance: %+v", in)
	}
}

func TestStartingUntilReadyThenOnline(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("api", func(a *spec.App) { a.Ready = spec.ReadyNotify }))
	p := h.nextSpawn()
	h.waitStatus("api", 0, Starting)
	p.send(Event{Kind: EventStatus, Text: "warming caches"})
	in := h.waitStatus("api", 0, Starting)
	for in.StatusText == "" {
		in = h.waitStatus("api", 0, Starting)
	}
	if in.StatusText != "warming caches" {
		t.Fatalf("status text %q", in.StatusText)
	}
	p.ready()
	h.waitStatus("api", 0, Online)
}

func TestReadyTimeoutIsAFailedStart(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("slow", func(a *spec.App) {
		a.Ready = spec.ReadyNotify
		a.ReadyTimeout = spec.Duration(2 * time.Second)
	}))
	p := h.nextSpawn()
	h.waitStatus("slow", 0, Starting)
	h.clock.Advance(2 * time.Second)
	// The supervisor stops it; the fake exits on Stop.
	e := h.nextExit()
	if e.Exit.Reason != "ready_timeout" || !e.Restarting {
		t.Fatalf("exit %+v, want reason ready_timeout and a restart", e)
	}
	if p.stopCount() != 1 {
		t.Fatalf("stops = %d", p.stopCount())
	}
	in := h.waitStatus("slow", 0, Waiting)
	if !strings.Contains(in.Reason, "not ready within ready_timeout 2s") {
		t.Fatalf("reason %q", in.Reason)
	}
}

func TestCrashAfterStableRunRestartsAtOnce(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("w"))
	p := h.nextSpawn()
	h.waitStatus("w", 0, Online)
	h.clock.Advance(5 * time.Second) // longer than min_uptime
	p.exitCode(1)
	p2 := h.nextSpawn()
	if p2.inst != 0 {
		t.Fatalf("respawned instance %d", p2.inst)
	}
	in := h.waitStatus("w", 0, Online)
	if in.Restarts != 1 || in.LastExit == nil || *in.LastExit.Code != 1 {
		t.Fatalf("after crash: %+v", in)
	}
	e := h.nextExit()
	if !e.Restarting || e.Exit.Reason != "" || e.Pid != p.pid {
		t.Fatalf("exit info %+v", e)
	}
}

// An exit that reaches the supervisor late (a busy keeper, or no daemon
// while it happened) counts the process's uptime to its exit, not to the
// moment the supervisor hears of it.
func TestUptimeEndsAtTheExit(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("late", func(a *spec.App) {
		a.MinUptime = spec.Duration(time.Second)
		a.RestartDelay = spec.Duration(100 * time.Millisecond)
	}))
	p := h.nextSpawn()
	h.waitStatus("late", 0, Online)
	h.clock.Advance(5 * time.Second) // the exit is heard of 5 s after the start
	p.exit(spec.ExitCode(2, p.Started().Add(10*time.Millisecond)))
	in := h.waitStatus("late", 0, Waiting)
	if !strings.Contains(in.Reason, "restarting in 100ms (unstable run 1 of") {
		t.Fatalf("reason %q", in.Reason)
	}
}

func TestCrashLoopBacksOffThenErrors(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("loop", func(a *spec.App) {
		a.MaxRestarts = 4
		a.RestartDelay = spec.Duration(100 * time.Millisecond)
		a.BackoffMax = spec.Duration(500 * time.Millisecond)
	}))
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}
	for i, d := range want {
		p := h.nextSpawn()
		h.waitStatus("loop", 0, Online)
		p.exitCode(2) // at once: an unstable run
		in := h.waitStatus("loop", 0, Waiting)
		if !strings.Contains(in.Reason, "restarting in "+d.String()) {
			t.Fatalf("run %d: reason %q, want a delay of %s", i, in.Reason, d)
		}
		if got := h.clock.pendingDelays(); len(got) != 1 || got[0] != d {
			t.Fatalf("run %d: timers %v, want one of %s", i, got, d)
		}
		// Nothing is spawned before the delay has passed: no busy loop.
		h.clock.Advance(d - time.Millisecond)
		h.noSpawn()
		h.clock.Advance(time.Millisecond)
	}
	p := h.nextSpawn()
	h.waitStatus("loop", 0, Online)
	p.exitCode(2)
	in := h.waitStatus("loop", 0, Errored)
	if !strings.Contains(in.Reason, "gave up after 5 unstable runs") || !strings.Contains(in.Reason, "keel restart loop") {
		t.Fatalf("errored reason %q", in.Reason)
	}
	if in.Restarts != 4 {
		t.Fatalf("restarts = %d, want 4", in.Restarts)
	}
	h.clock.Advance(time.Hour)
	h.noSpawn()
	// A user's restart brings it back with a clean slate.
	if _, err := h.sup.Restart(h.ctx(), spec.Target{App: "loop", Instance: -1}, ""); err != nil {
		t.Fatal(err)
	}
	h.nextSpawn()
	h.waitStatus("loop", 0, Online)
}

func TestStableRunResetsBackoff(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("s"))
	p := h.nextSpawn()
	p.exitCode(1)
	h.waitStatus("s", 0, Waiting)
	h.clock.Advance(100 * time.Millisecond)
	p = h.nextSpawn()
	h.clock.Advance(2 * time.Second)
	p.exitCode(1)
	h.nextSpawn() // at once: the run was stable
	h.waitStatus("s", 0, Online)
}

func TestFinalStates(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*spec.App)
		code int
	}{
		{"stop_exit_code", func(a *spec.App) { a.StopExitCodes = []int{3} }, 3},
		{"never", func(a *spec.App) { a.Restart = spec.RestartNever }, 1},
		{"on_failure_clean", func(a *spec.App) { a.Restart = spec.RestartOnFailure }, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.start(newSpec("f", c.mod))
			p := h.nextSpawn()
			h.clock.Advance(5 * time.Second)
			p.exitCode(c.code)
			in := h.waitStatus("f", 0, Stopped)
			if in.LastExit == nil || *in.LastExit.Code != c.code {
				t.Fatalf("last exit %+v", in.LastExit)
			}
			h.clock.Advance(time.Minute)
			h.noSpawn()
		})
	}
	t.Run("on_failure_crash_restarts", func(t *testing.T) {
		h := newHarness(t)
		h.start(newSpec("f", func(a *spec.App) { a.Restart = spec.RestartOnFailure }))
		p := h.nextSpawn()
		h.clock.Advance(5 * time.Second)
		p.exitCode(1)
		h.nextSpawn()
	})
}

func TestStopSignalsAndWaits(t *testing.T) {
	h := newHarness(t)
	h.spawn.autoExit = false
	h.start(newSpec("st", func(a *spec.App) { a.KillSignal = "SIGINT" }))
	p := h.nextSpawn()
	h.waitStatus("st", 0, Online)
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.Stop(context.Background(), spec.Target{App: "st", Instance: -1})
		done <- err
	}()
	h.waitStatus("st", 0, Stopping)
	select {
	case err := <-done:
		t.Fatalf("Stop returned before the process exited: %v", err)
	default:
	}
	p.mu.Lock()
	sigs := append([]syscall.Signal(nil), p.stops...)
	p.mu.Unlock()
	if len(sigs) != 1 || sigs[0] != syscall.SIGINT {
		t.Fatalf("stop signals %v", sigs)
	}
	p.exit(spec.ExitSignal("SIGINT", h.clock.Now()))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	in := h.waitStatus("st", 0, Stopped)
	if in.LastExit == nil || in.LastExit.Reason != "stop" || *in.LastExit.Signal != "SIGINT" {
		t.Fatalf("last exit %+v", in.LastExit)
	}
	h.noSpawn()
	// The persister writes asynchronously; the record settles quickly.
	var rec AppRecord
	if !poll.Within(5*time.Second, func() bool {
		rec, _ = h.store.get("st")
		return len(rec.Instances) == 1 && rec.Instances[0].Stopped
	}) {
		t.Fatalf("stored record %+v", rec)
	}
}

func TestStopWhileWaitingCancelsBackoff(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("w"))
	p := h.nextSpawn()
	p.exitCode(1)
	h.waitStatus("w", 0, Waiting)
	if _, err := h.sup.Stop(h.ctx(), spec.Target{App: "w", Instance: 0}); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("w", 0, Stopped)
	h.clock.Advance(time.Minute)
	h.noSpawn()
}

func TestRestartCountsAndReplaces(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("r", func(a *spec.App) { a.Instances = 2 }))
	h.nextSpawn()
	h.nextSpawn()
	l, err := h.sup.Restart(h.ctx(), spec.Target{App: "r", Instance: 1}, "")
	if err != nil {
		t.Fatal(err)
	}
	p := h.nextSpawn()
	if p.inst != 1 {
		t.Fatalf("restarted instance %d", p.inst)
	}
	for _, in := range l {
		want := 0
		if in.Instance == 1 {
			want = 1
		}
		if in.Restarts != want {
			t.Fatalf("instance %d restarts %d, want %d", in.Instance, in.Restarts, want)
		}
	}
	e := h.nextExit()
	if e.Exit.Reason != "restart" || e.Instance != 1 {
		t.Fatalf("exit %+v", e)
	}
}

func TestReloadStartsNewBeforeStoppingOld(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("api", func(a *spec.App) {
		a.Instances = 2
		a.Listen = []string{":3000"}
		a.Ready = spec.ReadyNotify
	}))
	old := []*fakeProc{h.nextSpawn(), h.nextSpawn()}
	for _, p := range old {
		p.ready()
	}
	h.waitStatus("api", 0, Online)
	h.waitStatus("api", 1, Online)
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.Reload(context.Background(), spec.Target{App: "api", Instance: -1}, "")
		done <- err
	}()
	byInst := map[int]*fakeProc{old[0].inst: old[0], old[1].inst: old[1]}
	for i := 0; i < 2; i++ {
		n := h.nextSpawn()
		o := byInst[n.inst]
		// The old one is untouched until the new one is ready.
		h.list()
		if o.stopCount() != 0 {
			t.Fatalf("old %s:%d stopped before its replacement was ready", o.app, o.inst)
		}
		in := h.waitStatus("api", n.inst, Online)
		if in.Pid != o.pid {
			t.Fatalf("instance shows pid %d before the swap, want old %d", in.Pid, o.pid)
		}
		n.ready()
		e := h.nextExit()
		if e.Pid != o.pid || e.Exit.Reason != "reload" {
			t.Fatalf("exit %+v, want old pid %d with reason reload", e, o.pid)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, in := range h.list() {
		if in.Status != Online || in.Restarts != 1 || in.Pid == old[0].pid || in.Pid == old[1].pid {
			t.Fatalf("after reload: %+v", in)
		}
	}
}

func TestFailedReloadKeepsOld(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("api", func(a *spec.App) {
		a.Listen = []string{":3000"}
		a.Ready = spec.ReadyNotify
	}))
	old := h.nextSpawn()
	old.ready()
	h.waitStatus("api", 0, Online)
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.Reload(context.Background(), spec.Target{App: "api", Instance: -1}, "")
		done <- err
	}()
	n := h.nextSpawn()
	n.exitCode(1)
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "old process keeps serving") {
		t.Fatalf("reload error %v", err)
	}
	in := h.waitStatus("api", 0, Online)
	if in.Pid != old.pid || old.stopCount() != 0 {
		t.Fatalf("old process disturbed: %+v, stops %d", in, old.stopCount())
	}
}

func TestReloadWithoutSocketsRestarts(t *testing.T) {
	h := newHarness(t)
	h.spawn.autoExit = false
	h.start(newSpec("worker"))
	old := h.nextSpawn()
	h.waitStatus("worker", 0, Online)
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.Reload(context.Background(), spec.Target{App: "worker", Instance: -1}, "")
		done <- err
	}()
	h.waitStatus("worker", 0, Stopping)
	h.noSpawn() // a restart stops first
	old.exit(spec.ExitSignal("SIGTERM", h.clock.Now()))
	h.nextSpawn()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestScaleUpAndDown(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("sc"))
	h.nextSpawn()
	if _, err := h.sup.Scale(h.ctx(), "sc", 3); err != nil {
		t.Fatal(err)
	}
	a, b := h.nextSpawn(), h.nextSpawn()
	if a.inst+b.inst != 3 {
		t.Fatalf("new instances %d and %d", a.inst, b.inst)
	}
	l, err := h.sup.Scale(h.ctx(), "sc", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].Instance != 0 {
		t.Fatalf("after scale down: %+v", l)
	}
	for i := 0; i < 2; i++ {
		if e := h.nextExit(); e.Exit.Reason != "scale" {
			t.Fatalf("exit %+v", e)
		}
	}
	if _, err := h.sup.Scale(h.ctx(), "nope", 2); err == nil {
		t.Fatal("scaling a missing app succeeded")
	}
}

func TestDeleteForgets(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("d", func(a *spec.App) { a.Instances = 2 }))
	h.nextSpawn()
	h.nextSpawn()
	if _, err := h.sup.Delete(h.ctx(), spec.Target{App: "d", Instance: -1}); err != nil {
		t.Fatal(err)
	}
	if l := h.list(); len(l) != 0 {
		t.Fatalf("after delete: %+v", l)
	}
	var nf *spec.NotFoundError
	if _, err := h.sup.Stop(h.ctx(), spec.Target{App: "d", Instance: -1}); !errors.As(err, &nf) {
		t.Fatalf("stop of deleted app: %v", err)
	}
	poll.Until(t, 5*time.Second, "the deleted app to leave the store", func() bool {
		_, ok := h.store.get("d")
		return !ok
	})
}

func TestStartTwiceIsRefused(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("x"))
	h.nextSpawn()
	a := newSpec("x")
	a.Normalize()
	if _, err := h.sup.Start(h.ctx(), []*spec.App{a}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second start: %v", err)
	}
}

func TestSpawnFailureErrors(t *testing.T) {
	h := newHarness(t)
	h.spawn.fail = errBoom
	a := newSpec("bad")
	a.Normalize()
	_, err := h.sup.Start(h.ctx(), []*spec.App{a})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("start error %v", err)
	}
	in := h.waitStatus("bad", 0, Errored)
	if !strings.Contains(in.Reason, "start failed") {
		t.Fatalf("reason %q", in.Reason)
	}
}

func TestRestoreAdoptsSurvivorsAndStartsTheRest(t *testing.T) {
	c := newFakeClock()
	store := newMemStore()
	sp := newSpec("svc", func(a *spec.App) { a.Instances = 3 })
	sp.Normalize()
	store.SaveApp(AppRecord{Spec: sp, Instances: []InstanceRecord{{Instance: 0, Restarts: 4}, {Instance: 1}, {Instance: 2}}})
	stopped := newSpec("off")
	stopped.Normalize()
	store.SaveApp(AppRecord{Spec: stopped, Stopped: true, Instances: []InstanceRecord{{Instance: 0, Stopped: true}}})

	mk := func(pid, inst int, started time.Time) *fakeProc {
		return &fakeProc{id: "s", pid: pid, started: started, app: "svc", inst: inst,
			events: make(chan Event, 16), clock: c, autoExit: true}
	}
	keep := mk(501, 0, c.Now())
	dupOld := mk(502, 0, c.Now().Add(-time.Hour))
	stray := mk(503, 7, c.Now())
	inst1 := mk(504, 1, c.Now())
	h := newHarness(t, func(h *harness) {
		h.clock = c
		h.spawn = newFakeSpawner(c)
		h.store = store
		h.spawn.survivors = []Survivor{
			{App: "svc", Instance: 0, Process: dupOld},
			{App: "svc", Instance: 0, Process: keep},
			{App: "svc", Instance: 7, Process: stray},
			{App: "svc", Instance: 1, Process: inst1},
		}
	})
	t.Cleanup(func() {
		for _, p := range []*fakeProc{keep, inst1} {
			p.exitCode(0)
		}
	})
	p := h.nextSpawn() // only instance 2 lacked a process
	if p.inst != 2 {
		t.Fatalf("spawned instance %d", p.inst)
	}
	h.noSpawn()
	in0 := h.waitStatus("svc", 0, Online)
	if in0.Pid != keep.pid || in0.Restarts != 4 {
		t.Fatalf("instance 0: %+v", in0)
	}
	if in1 := h.waitStatus("svc", 1, Online); in1.Pid != inst1.pid {
		t.Fatalf("instance 1: %+v", in1)
	}
	h.waitStatus("off", 0, Stopped)
	for _, p := range []*fakeProc{dupOld, stray} {
		poll.Within(5*time.Second, func() bool { return p.stopCount() > 0 })
		if p.stopCount() != 1 {
			t.Fatalf("pid %d was not stopped", p.pid)
		}
	}
	if keep.stopCount() != 0 {
		t.Fatal("the adopted process was stopped")
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {5, 1600 * time.Millisecond}, {20, 30 * time.Second}, {200, 30 * time.Second}} {
		if got := Backoff(100*time.Millisecond, 30*time.Second, c.n); got != c.want {
			t.Errorf("Backoff(%d) = %s, want %s", c.n, got, c.want)
		}
	}
}

func TestStatusNames(t *testing.T) {
	want := []string{"starting", "online", "stopping", "stopped", "waiting", "errored"}
	for i, s := range []Status{Starting, Online, Stopping, Stopped, Waiting, Errored} {
		if s.String() != want[i] {
			t.Errorf("%d: %s", i, s)
		}
	}
}

// TestReadyOnce: an app has been ready once (keel run's /startupz) when
// ReadyNeed of its instances were online together, and stays so after a
// crash.
func TestReadyOnce(t *testing.T) {
	readyOnce := func(h *harness) bool {
		h.t.Helper()
		apps, err := h.sup.Apps(h.ctx(), spec.All)
		if err != nil || len(apps) != 1 {
			h.t.Fatalf("Apps: %v %v", apps, err)
		}
		return apps[0].ReadyOnce
	}
	h := newHarness(t)
	h.start(newSpec("web", func(a *spec.App) { a.Instances = 3; a.Ready = spec.ReadyNotify }))
	p0, p1, p2 := h.nextSpawn(), h.nextSpawn(), h.nextSpawn()
	p0.ready()
	h.waitStatus("web", p0.inst, Online)
	p1.ready()
	h.waitStatus("web", p1.inst, Online)
	if readyOnce(h) {
		t.Fatal("ready once with 2 of 3 instances online")
	}
	p2.ready()
	h.waitStatus("web", p2.inst, Online)
	if !readyOnce(h) {
		t.Fatal("not ready once with 3 of 3 online")
	}
	p1.exitCode(1)
	h.waitStatus("web", p1.inst, Waiting)
	if !readyOnce(h) {
		t.Fatal("a crash took back ready once")
	}

	h = newHarness(t)
	h.start(newSpec("api", func(a *spec.App) { a.Instances = 3; a.MinReady = 2; a.Ready = spec.ReadyNotify }))
	q0, q1 := h.nextSpawn(), h.nextSpawn()
	h.nextSpawn()
	q0.ready()
	h.waitStatus("api", q0.inst, Online)
	if readyOnce(h) {
		t.Fatal("ready once with 1 online, min_ready 2")
	}
	q1.ready()
	h.waitStatus("api", q1.inst, Online)
	if !readyOnce(h) {
		t.Fatal("not ready once with 2 online, min_ready 2")
	}
}

// A Notifier process gets its events forwarded without the Events channel
// (keel's keeper client): readiness, a crash and the restart work as with
// a channel.
func TestNotifierProcesses(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.spawn.notifier, h.spawn.t = true, t })
	h.start(newSpec("api", func(a *spec.App) { a.Ready = spec.ReadyNotify }))
	p := h.nextSpawn()
	h.waitStatus("api", 0, Starting)
	p.ready()
	h.waitStatus("api", 0, Online)
	p.mu.Lock()
	notified := p.notified
	p.mu.Unlock()
	if !notified {
		t.Fatal("Notify was not called")
	}
	h.clock.Advance(time.Minute) // a stable run: the restart comes at once
	p.exitCode(1)
	q := h.nextSpawn()
	if q.inst != 0 {
		t.Fatalf("restarted instance %d", q.inst)
	}
	q.ready()
	if in := h.waitStatus("api", 0, Online); in.Restarts != 1 || in.LastExit == nil || in.LastExit.Code == nil || *in.LastExit.Code != 1 {
		t.Fatalf("after the crash: %+v", in)
	}
}
