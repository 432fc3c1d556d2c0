package web

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/keel-run/keel/internal/api"
)

// History of per-app CPU and memory for the dashboard's charts.
const (
	historyEvery = 5 * time.Second
	historySpan  = 15 * time.Minute
)

// point is one app's totals at one moment.
type point struct {
	T   int64   `json:"t"`   // Unix milliseconds
	CPU float64 `json:"cpu"` // percent of one core, summed over instances
	Mem int64   `json:"mem"` // bytes, summed
}

// history keeps, while the listener is on, the last 15 minutes of each
// app's totals. run is its only writer; points copies under mu.
type history struct {
	mu   sync.Mutex
	apps map[string][]point
}

func newHistory() *history { return &history{apps: map[string][]point{}} }

func (h *history) run(ctx context.Context, b Backend) {
	t := time.NewTicker(historyEvery)
	defer t.Stop()
	for {
		if l, err := b.List(ctx); err == nil {
			h.add(time.Now(), l)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *history) add(now time.Time, l []api.Instance) {
	sums := map[string]point{}
	for _, in := range l {
		p := sums[in.App]
		p.CPU += in.CPUPercent
		p.Mem += in.MemoryBytes
		sums[in.App] = p
	}
	cut := now.Add(-historySpan).UnixMilli()
	h.mu.Lock()
	defer h.mu.Unlock()
	for app, p := range sums {
		p.T = now.UnixMilli()
		h.apps[app] = append(h.apps[app], p)
	}
	for app, ps := range h.apps {
		i := sort.Search(len(ps), func(i int) bool { return ps[i].T >= cut })
		if i == len(ps) {
			delete(h.apps, app)
			continue
		}
		if i > 0 {
			h.apps[app] = append(ps[:0:0], ps[i:]...)
		}
	}
}

func (h *history) points() map[string][]point {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]point, len(h.apps))
	for app, ps := range h.apps {
		out[app] = append([]point(nil), ps...)
	}
	return out
}
