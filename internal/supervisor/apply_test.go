package supervisor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/spec"
)

// webSpec is an app on a keel socket whose readiness the test gives by
// hand, so a reload's steps can be watched one by one.
func webSpec(greeting string, n int) *spec.App {
	a := newSpec("web", func(a *spec.App) {
		a.Instances = n
		a.Listen = []string{"127.0.0.1:3000"}
		a.Ready = spec.ReadyNotify
		a.Env = map[string]string{"GREETING": greeting}
	})
	a.Normalize()
	return a
}

func (h *harness) apply(o ApplyOptions, apps ...*spec.App) ([]AppChange, error) {
	h.t.Helper()
	for _, a := range apps {
		a.Normalize()
	}
	return h.sup.Apply(h.ctx(), apps, o)
}

// startReady starts web with n instances and makes each ready.
func (h *harness) startReady(a *spec.App) map[int]*fakeProc {
	h.t.Helper()
	h.start(a)
	procs := map[int]*fakeProc{}
	for range a.Instances {
		p := h.nextSpawn()
		procs[p.inst] = p
		p.ready()
	}
	for i := range a.Instances {
		h.waitStatus(a.Name, i, Online)
	}
	return procs
}

func TestApplyUnchangedTouchesNothing(t *testing.T) {
	h := newHarness(t)
	h.startReady(webSpec("hi", 2))
	got, err := h.apply(ApplyOptions{Mode: ApplyReload}, webSpec("hi", 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != ActionUnchanged || got[0].Done != "unchanged" || got[0].Changes != nil {
		t.Fatalf("apply of the same definition: %+v", got)
	}
	h.noSpawn()
}

func TestApplyStartsNewAndScales(t *testing.T) {
	h := newHarness(t)
	h.startReady(webSpec("hi", 2))
	worker := newSpec("worker")
	got, err := h.apply(ApplyOptions{}, webSpec("hi", 3), worker)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Done != "scaled" || got[0].From != 2 || got[0].To != 3 {
		t.Fatalf("web: %+v", got[0])
	}
	if got[1].Action != ActionStart || got[1].Done != "started" {
		t.Fatalf("worker: %+v", got[1])
	}
}

func TestApplyDryRunChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.startReady(webSpec("hi", 2))
	h.start(newSpec("old"))
	h.nextSpawn()
	got, err := h.apply(ApplyOptions{DryRun: true, Prune: true}, webSpec("hello", 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Action != ActionReplace || got[1].Action != ActionDelete || got[1].App != "old" {
		t.Fatalf("plan: %+v", got)
	}
	if c := got[0].Changes; len(c) != 1 || c[0].Key != "env.GREETING" || !c[0].Secret || strings.Contains(c[0].String(), "hello") {
		t.Fatalf("changes: %+v", c)
	}
	h.noSpawn()
}

// A reload rolls the new definition out instance by instance, each new
// process ready before its old one is stopped.
func TestApplyReloadRollsOut(t *testing.T) {
	h := newHarness(t)
	old := h.startReady(webSpec("hi", 2))
	type result struct {
		c   []AppChange
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := h.sup.Apply(h.ctx(), []*spec.App{webSpec("hello", 2)}, ApplyOptions{Mode: ApplyReload})
		res <- result{c, err}
	}()
	for i := range 2 {
		n := h.nextSpawn()
		if n.inst != i || n.sp.Env["GREETING"] != "hello" {
			t.Fatalf("spawn %d: instance %d with %v", i, n.inst, n.sp.Env)
		}
		if old[i].stopCount() != 0 {
			t.Fatalf("old instance %d stopped before its replacement was ready", i)
		}
		h.noSpawn() // one at a time
		apps, _ := h.sup.Apps(h.ctx(), spec.All)
		if apps[0].Spec.Env["GREETING"] != "hi" || apps[0].Deploying == nil || apps[0].Deploying.Env["GREETING"] != "hello" {
			t.Fatalf("during the rollout: spec %v, deploying %+v", apps[0].Spec.Env, apps[0].Deploying)
		}
		n.ready()
	}
	r := <-res
	if r.err != nil || r.c[0].Done != "reloaded" {
		t.Fatalf("apply: %+v, %v", r.c, r.err)
	}
	apps, _ := h.sup.Apps(h.ctx(), spec.All)
	if apps[0].Spec.Env["GREETING"] != "hello" || apps[0].Deploying != nil {
		t.Fatalf("definition after the reload: %v (deploying %v)", apps[0].Spec.Env, apps[0].Deploying)
	}
	// The persister writes asynchronously; the record settles quickly.
	poll.Until(t, 5*time.Second, "the new definition in the store", func() bool {
		st, ok := h.store.get("web")
		return ok && st.Spec.Env["GREETING"] == "hello"
	})
}

// A new process that dies before it is ready stops the rollout: the
// instances already replaced go back to the old definition, which stays
// the app's.
func TestApplyReloadFailureRollsBack(t *testing.T) {
	h := newHarness(t)
	old := h.startReady(webSpec("hi", 2))
	type result struct {
		c   []AppChange
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := h.sup.Apply(h.ctx(), []*spec.App{webSpec("hello", 2)}, ApplyOptions{Mode: ApplyReload})
		res <- result{c, err}
	}()
	n0 := h.nextSpawn()
	n0.ready()
	n1 := h.nextSpawn()
	if n1.inst != 1 {
		t.Fatalf("second spawn for instance %d", n1.inst)
	}
	n1.exitCode(1) // crashes at start
	back := h.nextSpawn()
	if back.inst != 0 || back.sp.Env["GREETING"] != "hi" {
		t.Fatalf("rollback spawned instance %d with %v", back.inst, back.sp.Env)
	}
	back.ready()
	r := <-res
	var ie *InstanceError
	if !errors.As(r.err, &ie) || ie.Instance != 1 || ie.App != "web" {
		t.Fatalf("apply error %v", r.err)
	}
	if r.c[0].Done != "rolled back" {
		t.Fatalf("outcome %+v", r.c[0])
	}
	if old[1].stopCount() != 0 {
		t.Fatal("instance 1's old process was stopped")
	}
	l := h.list()
	if l[0].Pid != back.pid || l[1].Pid != old[1].pid {
		t.Fatalf("after the rollback: %+v", l)
	}
	apps, _ := h.sup.Apps(h.ctx(), spec.All)
	if apps[0].Spec.Env["GREETING"] != "hi" {
		t.Fatalf("definition after a failed reload: %v", apps[0].Spec.Env)
	}
	if st, _ := h.store.get("web"); st.Spec.Env["GREETING"] != "hi" {
		t.Fatalf("stored definition after a failed reload: %v", st.Spec.Env)
	}
	// A later crash of instance 0 restarts it with the old definition.
	back.exitCode(1)
	h.waitStatus("web", 0, Waiting)
	h.clock.Advance(time.Minute)
	if p := h.nextSpawn(); p.sp.Env["GREETING"] != "hi" {
		t.Fatalf("restart after the rollback ran %v", p.sp.Env)
	}
}

func TestApplyIsOneAtATime(t *testing.T) {
	h := newHarness(t)
	h.startReady(webSpec("hi", 1))
	res := make(chan error, 1)
	go func() {
		_, err := h.sup.Apply(h.ctx(), []*spec.App{webSpec("hello", 1)}, ApplyOptions{Mode: ApplyReload})
		res <- err
	}()
	n := h.nextSpawn() // the first apply is under way
	if _, err := h.apply(ApplyOptions{}, webSpec("other", 1)); !errors.Is(err, ErrApplying) {
		t.Fatalf("second apply: %v", err)
	}
	n.ready()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

func TestApplyRestartReplacesAndPrunes(t *testing.T) {
	h := newHarness(t)
	h.startReady(webSpec("hi", 1))
	h.start(newSpec("old"))
	h.nextSpawn()
	got, err := h.apply(ApplyOptions{Mode: ApplyRestart, Prune: true}, webSpec("hello", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Done != "restarted" || got[1].Done != "deleted" {
		t.Fatalf("outcome %+v", got)
	}
	if p := h.nextSpawn(); p.sp.Env["GREETING"] != "hello" {
		t.Fatalf("restarted with %v", p.sp.Env)
	}
	if l := h.list(); len(l) != 1 || l[0].App != "web" {
		t.Fatalf("after prune: %+v", l)
	}
}

// Once StopAll began (keel kill), nothing new starts: a restart trigger
// firing meanwhile must not leave a process behind the daemon.
func TestNothingStartsAfterStopAll(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("web"))
	h.nextSpawn()
	h.waitStatus("web", 0, Online)
	if err := h.sup.StopAll(h.ctx()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sup.Restart(h.ctx(), spec.All, "watch"); !errors.Is(err, ErrClosing) {
		t.Fatalf("restart after StopAll: %v", err)
	}
	other := newSpec("other")
	other.Normalize()
	if _, err := h.sup.Start(h.ctx(), []*spec.App{other}); !errors.Is(err, ErrClosing) {
		t.Fatalf("start after StopAll: %v", err)
	}
	if _, err := h.sup.Scale(h.ctx(), "web", 2); !errors.Is(err, ErrClosing) {
		t.Fatalf("scale after StopAll: %v", err)
	}
	h.noSpawn()
}
