package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/spec"
)

// Scaling back up while a scale-down is still stopping takes the slots
// back: the app ends with instances 0, 1 and 2, none of them stopped by
// the earlier scale-down, and no two processes of one slot run at once.
func TestScaleUpWhileScaleDownStops(t *testing.T) {
	h := newHarness(t)
	h.spawn.autoExit = false
	h.start(newSpec("sc", func(a *spec.App) { a.Instances = 3 }))
	procs := map[int]*fakeProc{}
	for i := 0; i < 3; i++ {
		p := h.nextSpawn()
		procs[p.inst] = p
	}
	down := make(chan error, 1)
	go func() { _, err := h.sup.Scale(context.Background(), "sc", 1); down <- err }()
	h.waitStatus("sc", 1, Stopping)
	h.waitStatus("sc", 2, Stopping)
	up := make(chan error, 1)
	go func() { _, err := h.sup.Scale(context.Background(), "sc", 3); up <- err }()
	// Nothing new starts while the old processes of slots 1 and 2 run.
	h.noSpawn()
	if l := h.list(); len(l) != 3 {
		t.Fatalf("while stopping: %+v", l)
	}
	for _, i := range []int{1, 2} {
		procs[i].exit(spec.ExitSignal("SIGTERM", h.clock.Now()))
	}
	got := map[int]bool{}
	for i := 0; i < 2; i++ {
		p := h.nextSpawn()
		got[p.inst] = true
		procs[p.inst] = p
	}
	if !got[1] || !got[2] {
		t.Fatalf("new processes for slots %v, want 1 and 2", got)
	}
	for _, ch := range []chan error{down, up} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("scale did not return")
		}
	}
	var l []InstanceInfo
	if !poll.Within(10*time.Second, func() bool {
		l = h.list()
		if len(l) != 3 {
			return false
		}
		for i, in := range l {
			if in.Instance != i || in.Status != Online {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("after scaling back up: %+v", l)
	}
	for i, p := range procs {
		if i == 0 || p.pid > 1003 {
			if n := p.stopCount(); n != 0 {
				t.Fatalf("instance %d (pid %d) was asked to stop %d times", i, p.pid, n)
			}
		}
	}
	h.noSpawn()
}

// A scale-down removes the highest numbers; a later scale-up fills the
// lowest free slots.
func TestScaleFillsLowestFreeSlot(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("sc", func(a *spec.App) { a.Instances = 4 }))
	for i := 0; i < 4; i++ {
		h.nextSpawn()
	}
	if _, err := h.sup.Scale(h.ctx(), "sc", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sup.Scale(h.ctx(), "sc", 3); err != nil {
		t.Fatal(err)
	}
	if p := h.nextSpawn(); p.inst != 2 {
		t.Fatalf("scale-up started instance %d, want 2", p.inst)
	}
	l := h.list()
	if len(l) != 3 || l[0].Instance != 0 || l[1].Instance != 1 || l[2].Instance != 2 {
		t.Fatalf("instances %+v", l)
	}
}
