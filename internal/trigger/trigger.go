package trigger

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/procstat"
	"github.com/keel-run/keel/internal/spec"
)

// Reasons a Restart gives; they are also the Kind of a trigger's Info.
const (
	ReasonMaxMemory = "max_memory"
	ReasonCron      = "cron"
	ReasonWatch     = "watch"
	ReasonHealth    = "health"
)

// AllInstances in Restart.Instance means every instance of the app.
const AllInstances = -1

// Restart is a trigger's request to restart an instance, or all of them.
type Restart struct {
	Instance int    // an instance number, or AllInstances
	Reason   string // ReasonMaxMemory, ReasonCron, ReasonWatch or ReasonHealth
	Detail   string // for people: "rss 312M > 300M", "changed: src/app.js"
}

// Live is one running instance of the app.
type Live struct {
	Instance int
	Pid      int
}

// Defaults for the Config fields that tune timing.
const (
	DefaultMemoryInterval = time.Second
	DefaultDebounce       = 300 * time.Millisecond
	DefaultHealthTimeout  = 5 * time.Second
)

// Config is what Start needs. App and Restart are required; Live is
// required when the app sets max_memory or health_url.
type Config struct {
	App *spec.App

	// Live lists the app's running instances. It is called from the
	// trigger goroutines, so it must be safe for concurrent use and cheap.
	Live func() []Live

	// Memory returns the RSS of a pid in bytes; nil means
	// procstat.TreeRSS (the process and its descendants).
	Memory func(pid int) (int64, error)

	// Restart receives every request. It is called from the trigger
	// goroutines, one call at a time per trigger, and must not block long.
	Restart func(Restart)

	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil means time.Now; used for cron and Info

	MemoryInterval time.Duration // 0 means DefaultMemoryInterval
	Debounce       time.Duration // 0 means DefaultDebounce
	HealthTimeout  time.Duration // 0 means the smaller of DefaultHealthTimeout and health_interval
}

// Set is the running triggers of one app. Its methods are safe for
// concurrent use.
type Set struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   sync.Once

	mu    sync.Mutex // guards infos
	infos []info
}

// info is one trigger's entry for Info.
type info struct {
	kind   string
	detail func() string // computed on demand: cron shows its next activation
	last   time.Time
	count  int
}

// Start starts the triggers the app configures, and none if it configures
// none. They run until Stop is called or ctx is done. An error means nothing
// was started; a *spec.FieldError names the option at fault (a bad
// cron_restart spec, a watch path that does not exist or cannot be watched,
// a health_url that is not http or https).
func Start(ctx context.Context, cfg Config) (*Set, error) {
	if cfg.App == nil || cfg.Restart == nil {
		return nil, errors.New("trigger: Config.App and Config.Restart are required")
	}
	app := cfg.App
	if (app.MaxMemory > 0 || app.HealthURL != "") && cfg.Live == nil {
		return nil, errors.New("trigger: Config.Live is required for max_memory and health_url")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("app", app.Name)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Memory == nil {
		cfg.Memory = procstat.TreeRSS
	}
	if cfg.MemoryInterval <= 0 {
		cfg.MemoryInterval = DefaultMemoryInterval
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}

	// Prepare everything that can fail before any goroutine starts.
	var runs []func(ctx context.Context, fire func(Restart))
	s := &Set{}
	add := func(kind string, detail func() string, run func(context.Context, func(Restart))) {
		s.infos = append(s.infos, info{kind: kind, detail: detail})
		runs = append(runs, run)
	}
	if app.MaxMemory > 0 {
		m := &memory{cfg: cfg, limit: int64(app.MaxMemory)}
		add(ReasonMaxMemory, func() string { return app.MaxMemory.String() }, m.run)
	}
	if app.CronRestart != "" {
		c, err := newCron(cfg)
		if err != nil {
			return nil, err
		}
		add(ReasonCron, c.describe, c.run)
	}
	// The health check is checked before the watch is made, so that an
	// error leaves no watcher open.
	var h *health
	if app.HealthURL != "" {
		var err error
		if h, err = newHealth(cfg); err != nil {
			return nil, err
		}
	}
	if len(app.Watch) > 0 {
		w, err := newWatch(cfg)
		if err != nil {
			return nil, err
		}
		add(ReasonWatch, w.describe, w.run)
	}
	if h != nil {
		add(ReasonHealth, h.describe, h.run)
	}

	ctx, s.cancel = context.WithCancel(ctx)
	for i, run := range runs {
		fire := func(r Restart) {
			s.mu.Lock()
			s.infos[i].last = cfg.Now()
			s.infos[i].count++
			s.mu.Unlock()
			cfg.Logger.Info("restart trigger fired", "reason", r.Reason, "instance", r.Instance, "detail", r.Detail)
			cfg.Restart(r)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			run(ctx, fire)
		}()
	}
	return s, nil
}

// Stop stops every trigger and waits until their goroutines and watchers
// are gone; no Restart is delivered after it returns. Calling it again does
// nothing.
func (s *Set) Stop() {
	s.stop.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
}

// Info describes each configured trigger, in the order max_memory, cron,
// watch, health: its kind (a Reason), a detail, when it last fired and how
// often.
func (s *Set) Info() []api.TriggerInfo {
	s.mu.Lock()
	infos := append([]info(nil), s.infos...)
	s.mu.Unlock()
	out := make([]api.TriggerInfo, len(infos))
	for i, in := range infos {
		out[i] = api.TriggerInfo{Kind: in.kind, Detail: in.detail(), Count: in.count}
		if !in.last.IsZero() {
			last := in.last
			out[i].LastFired = &last
		}
	}
	return out
}

// sizeString writes a byte count the way people read memory: 312M, 1.5G.
func sizeString(n int64) string {
	units := []struct {
		suffix string
		size   float64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}
	for _, u := range units {
		if float64(n) >= u.size {
			s := strconv.FormatFloat(float64(n)/u.size, 'f', 1, 64)
			if len(s) > 2 && s[len(s)-2:] == ".0" {
				s = s[:len(s)-2]
			}
			return s + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
