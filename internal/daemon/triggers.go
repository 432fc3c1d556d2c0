package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
	"github.com/keel-run/keel/internal/trigger"
)

// triggerManager keeps one trigger.Set per app that configures any, and
// turns their requests into restarts (or rolling reloads, for a whole app
// that shares sockets).
type triggerManager struct {
	d   *Daemon
	log *slog.Logger

	mu   sync.Mutex // guards sets; sync and info may run concurrently
	sets map[string]*appTriggers

	ctx     context.Context // cancelled by close, ending triggered restarts
	cancel  context.CancelFunc
	running sync.WaitGroup // triggered restarts under way
}

type appTriggers struct {
	key string // the spec it was built from, as JSON
	set *trigger.Set
}

func newTriggerManager(d *Daemon, log *slog.Logger) *triggerManager {
	ctx, cancel := context.WithCancel(context.Background())
	return &triggerManager{d: d, log: log, sets: map[string]*appTriggers{}, ctx: ctx, cancel: cancel}
}

// sync starts, replaces and stops trigger sets to match the defined apps.
func (m *triggerManager) sync(ctx context.Context) {
	apps, err := m.d.sup.Apps(ctx, spec.All)
	if err != nil && !isNotFound(err) {
		m.log.Error("listing apps for triggers", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for _, a := range apps {
		name := a.Spec.Name
		seen[name] = true
		b, _ := json.Marshal(a.Spec)
		key := string(b)
		if cur, ok := m.sets[name]; ok {
			if cur.key == key {
				continue
			}
			cur.set.Stop()
			delete(m.sets, name)
		}
		if !hasTriggers(a.Spec) {
			continue
		}
		set, err := trigger.Start(context.Background(), trigger.Config{
			App:     a.Spec,
			Live:    m.live(name),
			Restart: m.restart(name),
			Memory:  m.d.stats.memory.tree,
			Logger:  m.log.With("app", name),
		})
		if err != nil {
			m.log.Error("starting restart triggers", "app", name, "err", err)
			continue
		}
		m.sets[name] = &appTriggers{key: key, set: set}
	}
	for name, cur := range m.sets {
		if !seen[name] {
			cur.set.Stop()
			delete(m.sets, name)
		}
	}
}

func hasTriggers(a *spec.App) bool {
	return a.MaxMemory > 0 || a.CronRestart != "" || len(a.Watch) > 0 || a.HealthURL != ""
}

func (m *triggerManager) live(name string) func() []trigger.Live {
	return func() []trigger.Live {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := m.d.sup.List(ctx)
		if err != nil {
			return nil
		}
		var out []trigger.Live
		for _, in := range l {
			if in.App == name && in.Pid != 0 && (in.Status == supervisor.Online || in.Status == supervisor.Starting) {
				out = append(out, trigger.Live{Instance: in.Instance, Pid: in.Pid})
			}
		}
		return out
	}
}

func (m *triggerManager) restart(name string) func(trigger.Restart) {
	return func(r trigger.Restart) {
		m.log.Info("restart triggered", "app", name, "instance", r.Instance, "reason", r.Reason, "detail", r.Detail)
		m.running.Add(1)
		go func() {
			defer m.running.Done()
			ctx, cancel := context.WithTimeout(m.ctx, 10*time.Minute)
			defer cancel()
			var err error
			if r.Instance == trigger.AllInstances {
				_, err = m.d.sup.Reload(ctx, spec.Target{App: name, Instance: -1}, r.Reason)
			} else {
				_, err = m.d.sup.Restart(ctx, spec.Target{App: name, Instance: r.Instance}, r.Reason)
			}
			if err != nil {
				m.log.Error("triggered restart failed", "app", name, "reason", r.Reason, "err", err)
			}
		}()
	}
}

func (m *triggerManager) info(name string) []api.TriggerInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.sets[name]; ok {
		return cur.set.Info()
	}
	return nil
}

func (m *triggerManager) close() {
	m.mu.Lock()
	for name, cur := range m.sets {
		cur.set.Stop()
		delete(m.sets, name)
	}
	m.mu.Unlock()
	m.cancel()
	m.running.Wait()
}
