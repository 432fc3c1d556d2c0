package supervisor

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/spec"
)

// waitServing waits until the supervisor has published want as app's
// serving slots.
func (h *harness) waitServing(app string, want []int, when string) {
	h.t.Helper()
	if !poll.Within(10*time.Second, func() bool { return slices.Equal(h.served.get(app), want) }) {
		h.t.Fatalf("%s: serving slots %v, want %v", when, h.served.get(app), want)
	}
}

// waitStops waits until p was asked to stop n times.
func waitStops(t *testing.T, p *fakeProc, n int) {
	t.Helper()
	if !poll.Within(10*time.Second, func() bool { return p.stopCount() >= n }) {
		t.Fatalf("pid %d was asked to stop %d times, want %d", p.pid, p.stopCount(), n)
	}
}

// The supervisor publishes the slots that take connections: ready, not
// asked to stop, not stopping or crashing, not exited.
func TestServingSlotsFollowReadinessStopsAndCrashes(t *testing.T) {
	h := newHarness(t)
	h.spawn.autoExit = false
	h.start(newSpec("web", func(a *spec.App) {
		a.Instances = 3
		a.Ready = spec.ReadyNotify
		a.Listen = []string{"127.0.0.1:3000"} // reloads are rolling
	}))
	procs := map[int]*fakeProc{}
	for range 3 {
		p := h.nextSpawn()
		procs[p.inst] = p
	}
	h.waitStatus("web", 2, Starting)
	if got := h.served.get("web"); got != nil {
		t.Fatalf("before any is ready, serving slots %v", got)
	}
	procs[0].ready()
	procs[2].ready()
	h.waitServing("web", []int{0, 2}, "0 and 2 ready, 1 not")
	procs[1].ready()
	h.waitServing("web", []int{0, 1, 2}, "all ready")

	// The app says it is shutting down (STOPPING=1).
	procs[2].send(Event{Kind: EventStopping})
	h.waitServing("web", []int{0, 1}, "2 said stopping")

	// A reload: the slot serves throughout; the new process takes over
	// once ready.
	reloaded := make(chan error, 1)
	go func() {
		_, err := h.sup.Reload(context.Background(), spec.Target{App: "web", Instance: 0}, "reload")
		reloaded <- err
	}()
	next := h.nextSpawn()
	h.list()
	if got := h.served.get("web"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("while the new process of 0 starts, serving slots %v", got)
	}
	next.ready()
	waitStops(t, procs[0], 1)
	if got := h.served.get("web"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("once the new process of 0 is ready, serving slots %v", got)
	}
	procs[0].exitCode(0)
	if err := <-reloaded; err != nil {
		t.Fatalf("Reload: %v", err)
	}
	procs[0] = next

	// keel stop: the slot is off before the stop goes out.
	stopped := make(chan error, 1)
	go func() {
		_, err := h.sup.Stop(context.Background(), spec.Target{App: "web", Instance: 1})
		stopped <- err
	}()
	waitStops(t, procs[1], 1)
	if got := h.served.get("web"); !slices.Equal(got, []int{0}) {
		t.Fatalf("once 1 is asked to stop, serving slots %v", got)
	}
	procs[1].exitCode(0)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}

	// A graceful crash: off at once; its replacement serves once ready.
	procs[0].send(Event{Kind: EventCrashing})
	h.waitServing("web", nil, "0 crashing")
	h.waitStatus("web", 0, Waiting) // a crash under min_uptime backs off
	h.clock.Advance(time.Minute)
	repl := h.nextSpawn()
	repl.ready()
	h.waitServing("web", []int{0}, "0's replacement ready")
	procs[0].exitCode(1)

	// An exit without a word before: off, back once the restart is ready.
	repl.exitCode(1)
	h.waitServing("web", nil, "0 exited")
	h.waitStatus("web", 0, Waiting)
	h.clock.Advance(time.Minute)
	again := h.nextSpawn()
	again.ready()
	h.waitServing("web", []int{0}, "0 restarted")

	// keel delete: nothing serves.
	deleted := make(chan error, 1)
	go func() {
		_, err := h.sup.Delete(context.Background(), spec.Target{App: "web", Instance: -1})
		deleted <- err
	}()
	waitStops(t, again, 1)
	h.waitServing("web", nil, "deleting")
	again.exitCode(0)
	procs[2].exitCode(0)
	if err := <-deleted; err != nil {
		t.Fatalf("Delete: %v", err)
	}
}
