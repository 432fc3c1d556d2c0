package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

func appMetrics(t *testing.T, h *harness, name string) AppMetrics {
	t.Helper()
	ms, err := h.sup.Metrics(h.ctx())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.App == name {
			return m
		}
	}
	t.Fatalf("no metrics for %s in %+v", name, ms)
	return AppMetrics{}
}

func restartsOf(m AppMetrics, inst int) map[string]uint64 {
	out := map[string]uint64{}
	for _, in := range m.Instances {
		if in.Instance == inst {
			for i, r := range RestartReasons {
				if in.Restarts[i] > 0 {
					out[r] = in.Restarts[i]
				}
			}
		}
	}
	return out
}

func TestMetricsCountRestartsByReason(t *testing.T) {
	h := newHarness(t)
	h.start(newSpec("api", func(a *spec.App) {
		a.Instances = 2
		a.Listen = []string{":3000"}
		a.Ready = spec.ReadyNotify
	}))
	ps := []*fakeProc{h.nextSpawn(), h.nextSpawn()}
	h.clock.Advance(30 * time.Millisecond)
	for _, p := range ps {
		p.ready()
	}
	h.waitStatus("api", 0, Online)
	h.waitStatus("api", 1, Online)
	m := appMetrics(t, h, "api")
	if m.Desired != 2 || m.Ready != 2 || m.ReadyDurations.Count != 2 || m.ReadyDurations.Sum < 0.059 || m.ReadyDurations.Sum > 0.061 {
		t.Fatalf("after start: %+v", m)
	}
	if r := restartsOf(m, 0); len(r) != 0 {
		t.Fatalf("first start counted as restart: %v", r)
	}

	// A crash after a stable run: reason crash.
	h.clock.Advance(5 * time.Second)
	byInst := map[int]*fakeProc{ps[0].inst: ps[0], ps[1].inst: ps[1]}
	byInst[0].exitCode(1)
	p := h.nextSpawn()
	p.ready()
	h.waitStatus("api", 0, Online)
	byInst[0] = p

	// A user restart (manual), a max_memory restart (memory).
	if _, err := h.sup.Restart(h.ctx(), spec.Target{App: "api", Instance: 1}, ""); err != nil {
		t.Fatal(err)
	}
	byInst[1] = h.nextSpawn()
	byInst[1].ready()
	h.waitStatus("api", 1, Online)
	go h.sup.Restart(context.Background(), spec.Target{App: "api", Instance: 1}, "max_memory")
	byInst[1] = h.nextSpawn()
	byInst[1].ready()
	h.waitStatus("api", 1, Online)

	// A rolling reload: reason reload for both, one reload observed.
	done := make(chan error, 1)
	go func() {
		_, err := h.sup.Reload(context.Background(), spec.Target{App: "api", Instance: -1}, "")
		done <- err
	}()
	for i := 0; i < 2; i++ {
		n := h.nextSpawn()
		h.clock.Advance(time.Second)
		n.ready()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m = appMetrics(t, h, "api")
	if got := restartsOf(m, 0); len(got) != 2 || got["crash"] != 1 || got["reload"] != 1 {
		t.Fatalf("instance 0 restarts %v, want crash 1 and reload 1", got)
	}
	if got := restartsOf(m, 1); len(got) != 3 || got["manual"] != 1 || got["memory"] != 1 || got["reload"] != 1 {
		t.Fatalf("instance 1 restarts %v, want manual, memory and reload 1 each", got)
	}
	if m.ReloadDurations.Count != 1 || m.ReloadDurations.Sum < 2 {
		t.Fatalf("reload histogram %+v, want one reload of at least 2s", m.ReloadDurations)
	}
	var total uint64
	for _, c := range m.ReadyDurations.Counts {
		total += c
	}
	if total != m.ReadyDurations.Count || m.ReadyDurations.Count != 7 {
		t.Fatalf("ready histogram %+v, want 7 observations", m.ReadyDurations)
	}

	if _, err := h.sup.Stop(h.ctx(), spec.Target{App: "api", Instance: -1}); err != nil {
		t.Fatal(err)
	}
	if m := appMetrics(t, h, "api"); m.Desired != 0 || m.Ready != 0 {
		t.Fatalf("after stop: desired %d ready %d", m.Desired, m.Ready)
	}
}
