package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// Graceful crash: EventCrashing replaces the instance at once; the old
// process's later exit is recorded as the crash it is.

func TestGracefulCrashReplacesBeforeTheExit(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("web", func(a *spec.App) { a.Instances = 2 }))
	p0, p1 := h.nextSpawn(), h.nextSpawn()
	if p0.inst != 0 {
		p0, p1 = p1, p0
	}
	h.waitStatus("web", 0, Online)
	h.waitStatus("web", 1, Online)
	h.clock.Advance(5 * time.Second) // a stable run: no backoff

	const text = "Error: boom\n    at explode (/app/server.js:3:9)\n"
	p0.send(Event{Kind: EventCrashing, Text: text})
	r := h.nextSpawn() // before p0 exits
	if r.inst != 0 {
		t.Fatalf("replacement for instance %d", r.inst)
	}
	in := h.waitStatus("web", 0, Online)
	if in.Pid != r.pid || in.Restarts != 1 {
		t.Fatalf("instance 0 after the crash: %+v, want pid %d and 1 restart", in, r.pid)
	}
	select {
	case e := <-h.exits:
		t.Fatalf("an exit (%+v) before the old process exited", e)
	default:
	}
	if p0.stopCount() != 0 {
		t.Fatal("keel stopped the draining process; it ends on its own")
	}

	// The old process's exit is a crash: recorded, counted, no new spawn;
	// it carries what the process printed when it reported the crash.
	p0.exitCode(1)
	e := h.nextExit()
	if e.Pid != p0.pid || e.Exit.Code == nil || *e.Exit.Code != 1 || !e.Restarting || e.Instance != 0 || e.CrashText != text {
		t.Fatalf("exit info %+v", e)
	}
	h.noSpawn()
	in = h.waitStatus("web", 0, Online)
	if in.Pid != r.pid || in.LastExit == nil || *in.LastExit.Code != 1 || in.Restarts != 1 {
		t.Fatalf("instance 0 after the old exit: %+v", in)
	}
	apps, err := h.sup.Apps(h.ctx(), spec.Target{App: "web", Instance: -1})
	if err != nil || len(apps[0].Exits) != 1 || apps[0].Exits[0].Pid != p0.pid {
		t.Fatalf("exit history %+v, %v", apps, err)
	}
	_ = p1
}

// An unstable crash waits its backoff while another instance serves; with
// none serving, the replacement starts at once; max_restarts still ends it.
func TestGracefulCrashBackoffKeepsOneInstanceUp(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("web", func(a *spec.App) {
		a.Instances = 2
		a.MaxRestarts = 3
	}))
	procs := map[int]*fakeProc{}
	for range 2 {
		p := h.nextSpawn()
		procs[p.inst] = p
	}
	h.waitStatus("web", 0, Online)
	h.waitStatus("web", 1, Online)

	// Instance 0 crashes at once (unstable): instance 1 serves, so 0
	// waits its backoff, the old process still draining.
	procs[0].send(Event{Kind: EventCrashing})
	in := h.waitStatus("web", 0, Waiting)
	if !strings.Contains(in.Reason, "restarting in 100ms") {
		t.Fatalf("reason %q", in.Reason)
	}
	h.noSpawn()

	// Instance 1 crashes too: nothing would be starting or serving, so it
	// is replaced at once, backoff or not.
	procs[1].send(Event{Kind: EventCrashing})
	r1 := h.nextSpawn()
	if r1.inst != 1 {
		t.Fatalf("spawned instance %d, want 1", r1.inst)
	}
	h.waitStatus("web", 1, Online)
	// Instance 0's backoff still runs its course.
	h.clock.Advance(100 * time.Millisecond)
	r0 := h.nextSpawn()
	if r0.inst != 0 {
		t.Fatalf("spawned instance %d, want 0", r0.inst)
	}
	procs[0].exitCode(1)
	procs[1].exitCode(1)
	for range 2 {
		if e := h.nextExit(); e.Exit.Code == nil || *e.Exit.Code != 1 || !e.Restarting {
			t.Fatalf("exit %+v", e)
		}
	}

	// A storm on instance 1 alone, with instance 0 serving, backs off and
	// ends in errored after max_restarts.
	h.waitStatus("web", 0, Online)
	p := r1
	for i := 2; ; i++ {
		p.send(Event{Kind: EventCrashing})
		p.exitCode(1)
		h.nextExit()
		if i > 3 {
			break
		}
		h.waitStatus("web", 1, Waiting)
		h.clock.Advance(time.Minute)
		p = h.nextSpawn()
		h.waitStatus("web", 1, Online)
	}
	in = h.waitStatus("web", 1, Errored)
	if !strings.Contains(in.Reason, "gave up after 4 unstable runs") {
		t.Fatalf("reason %q", in.Reason)
	}
}

// keel stop waits for a draining process too; crashing is ignored for a
// process keel is stopping.
func TestGracefulCrashAndStop(t *testing.T) {
	h := newHarness(t)
	h.spawn.autoExit = false
	h.start(newSpec("web"))
	p := h.nextSpawn()
	h.waitStatus("web", 0, Online)
	h.clock.Advance(5 * time.Second)
	p.send(Event{Kind: EventCrashing})
	r := h.nextSpawn()
	h.waitStatus("web", 0, Online)

	stopped := make(chan error, 1)
	go func() {
		_, err := h.sup.Stop(h.ctx(), spec.Target{App: "web", Instance: -1})
		stopped <- err
	}()
	h.waitStatus("web", 0, Stopping)
	r.send(Event{Kind: EventCrashing}) // while stopping: not replaced
	r.exitCode(1)
	// The replacement's exit reaches the owner loop before the crashed
	// process's, which the test ends only after it.
	if e := h.nextExit(); e.Pid != r.pid || e.Restarting || e.Exit.Reason != "stop" {
		t.Fatalf("exit of the replacement %+v, want a stop without restart", e)
	}
	h.noSpawn()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) with the draining process alive", err)
	default:
	}
	if p.stopCount() != 1 {
		t.Fatalf("the draining process got %d stops, want 1", p.stopCount())
	}
	p.exitCode(1)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	h.waitStatus("web", 0, Stopped)
	// The crashed process was replaced, and its exit is the crash.
	if e := h.nextExit(); e.Pid != p.pid || !e.Restarting || e.Exit.Reason != "" {
		t.Fatalf("exit of the crashed process %+v", e)
	}
}

// keel delete forgets the app only once its draining process exited too.
func TestGracefulCrashAndDelete(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("web"))
	p := h.nextSpawn()
	h.waitStatus("web", 0, Online)
	h.clock.Advance(5 * time.Second)
	h.spawn.mu.Lock()
	h.spawn.autoExit = false
	h.spawn.mu.Unlock()
	p.mu.Lock()
	p.autoExit = false
	p.mu.Unlock()
	p.send(Event{Kind: EventCrashing})
	r := h.nextSpawn()
	deleted := make(chan error, 1)
	go func() {
		_, err := h.sup.Delete(h.ctx(), spec.Target{App: "web", Instance: -1})
		deleted <- err
	}()
	h.waitStatus("web", 0, Stopping)
	r.exitCode(0)
	h.list()
	select {
	case err := <-deleted:
		t.Fatalf("Delete returned (%v) with the draining process alive", err)
	default:
	}
	p.exitCode(1)
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	if l := h.list(); len(l) != 0 {
		t.Fatalf("instances after delete: %+v", l)
	}
}
