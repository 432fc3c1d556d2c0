package trigger

import (
	"context"
	"time"
)

// memory is the max_memory trigger.
type memory struct {
	cfg   Config
	limit int64
}

// run checks every live instance each MemoryInterval. fired holds the pids
// already asked to restart, so a process that is still on its way out is
// not asked again; a pid leaves it when it is no longer live.
func (m *memory) run(ctx context.Context, fire func(Restart)) {
	tick := time.NewTicker(m.cfg.MemoryInterval)
	defer tick.Stop()
	fired := make(map[int]bool)
	live := make(map[int]bool)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		clear(live)
		for _, l := range m.cfg.Live() {
			live[l.Pid] = true
			if fired[l.Pid] || l.Pid <= 0 {
				continue
			}
			rss, err := m.cfg.Memory(l.Pid)
			if err != nil {
				continue // exited since Live listed it
			}
			if rss > m.limit {
				fired[l.Pid] = true
				fire(Restart{
					Instance: l.Instance,
					Reason:   ReasonMaxMemory,
					Detail:   "rss " + sizeString(rss) + " > " + sizeString(m.limit),
				})
			}
		}
		for pid := range fired {
			if !live[pid] {
				delete(fired, pid)
			}
		}
	}
}
