package daemon

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/keel-run/keel/internal/procstat"
	"github.com/keel-run/keel/internal/supervisor"
)

// statsCache holds the latest memory/CPU sample of every instance, so
// `keel ls` never waits on /proc. One goroutine (run) owns the sampler and
// publishes immutable snapshots.
type statsCache struct {
	cur atomic.Pointer[map[int]procstat.Stat]
}

func newStatsCache() *statsCache {
	c := &statsCache{}
	empty := map[int]procstat.Stat{}
	c.cur.Store(&empty)
	return c
}

func (c *statsCache) get() map[int]procstat.Stat { return *c.cur.Load() }

func (c *statsCache) run(ctx context.Context, sup *supervisor.Supervisor, every time.Duration) {
	s := procstat.NewSampler()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		l, err := sup.List(ctx)
		if err == nil {
			pids := make([]int, 0, len(l))
			for _, in := range l {
				if in.Pid != 0 {
					pids = append(pids, in.Pid)
				}
			}
			m := s.Sample(pids)
			c.cur.Store(&m)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
