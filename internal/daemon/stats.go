package daemon

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/keel-run/keel/internal/procstat"
	"github.com/keel-run/keel/internal/supervisor"
)

// statsCache holds the latest memory/CPU sample of every instance. One
// goroutine (run) owns the sampler and publishes immutable snapshots.
//
// It samples only while someone looks: each second while `ls`, `monit`,
// the dashboard or a scrape read it in the last idleAfter, not at all
// otherwise, so an idle daemon with a thousand instances reads no /proc.
// The first read after a pause waits for one fresh sample (bounded by
// freshWait); a CPU figure then covers the time since the sample before.
type statsCache struct {
	cur      atomic.Pointer[statsSnap]
	lastRead atomic.Int64 // UnixNano of the last get
	want     chan chan struct{}
	every    time.Duration
	memory   instanceMemory
}

type statsSnap struct {
	at time.Time
	m  map[int]procstat.Stat
}

const (
	// idleAfter: with no read for this many intervals, sampling stops.
	idleAfter = 3
	// freshWait bounds how long a read after a pause waits for a sample.
	freshWait = 500 * time.Millisecond
)

func newStatsCache(every time.Duration, memory instanceMemory) *statsCache {
	c := &statsCache{want: make(chan chan struct{}), every: every, memory: memory}
	c.cur.Store(&statsSnap{m: map[int]procstat.Stat{}})
	return c
}

// get returns the latest sample, first waiting for a fresh one if the
// latest is older than two intervals (sampling had paused).
func (c *statsCache) get() map[int]procstat.Stat {
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	s := c.cur.Load()
	if now.Sub(s.at) <= 2*c.every {
		return s.m
	}
	done := make(chan struct{})
	t := time.NewTimer(freshWait)
	defer t.Stop()
	select {
	case c.want <- done:
		select {
		case <-done:
		case <-t.C:
		}
	case <-t.C: // run is busy sampling, or gone
	}
	return c.cur.Load().m
}

func (c *statsCache) run(ctx context.Context, sup *supervisor.Supervisor) {
	s := procstat.NewSampler()
	t := time.NewTicker(c.every)
	defer t.Stop()
	sample := func() {
		l, err := sup.List(ctx)
		if err != nil {
			return
		}
		pids := make([]int, 0, len(l))
		for _, in := range l {
			if in.Pid != 0 {
				pids = append(pids, in.Pid)
			}
		}
		m := s.Sample(pids)
		c.memory.apply(m)
		c.cur.Store(&statsSnap{at: time.Now(), m: m})
	}
	for {
		select {
		case <-ctx.Done():
			return
		case done := <-c.want:
			sample()
			close(done)
		case now := <-t.C:
			if now.Sub(time.Unix(0, c.lastRead.Load())) < idleAfter*c.every {
				sample()
			}
		}
	}
}
