package supervisor

import (
	"context"
	"sort"
	"time"
)

// RestartReasons are the values of the reason label of
// keel_instance_restarts_total, in the order of InstanceMetrics.Restarts.
var RestartReasons = [...]string{"crash", "memory", "health", "cron", "watch", "manual", "reload"}

// reasonIndex maps the reason a restart was asked for (a Restart or
// Reload reason, a trigger's name) to its index in RestartReasons. A run
// started by the restart policy after an exit has no reason: "crash".
func reasonIndex(reason string) int {
	switch reason {
	case "", "crash":
		return 0
	case "max_memory", "memory":
		return 1
	case "health":
		return 2
	case "cron":
		return 3
	case "watch":
		return 4
	case "reload":
		return 6
	}
	return 5 // restart, start, and whatever a user asked for
}

// Histogram bounds in seconds shared by the ready and reload histograms:
// a ready wait is milliseconds to a minute, a rolling reload up to minutes.
var HistogramBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Histogram is a Prometheus-style histogram over HistogramBounds: Counts[i]
// is the number of observations ≤ HistogramBounds[i] (not cumulative; the
// renderer sums), the last element counts those above every bound.
type Histogram struct {
	Counts []uint64
	Sum    float64
	Count  uint64
}

func (h *Histogram) observe(d time.Duration) {
	if h.Counts == nil {
		h.Counts = make([]uint64, len(HistogramBounds)+1)
	}
	v := d.Seconds()
	i := 0
	for i < len(HistogramBounds) && v > HistogramBounds[i] {
		i++
	}
	h.Counts[i]++
	h.Sum += v
	h.Count++
}

func (h Histogram) clone() Histogram {
	h.Counts = append([]uint64(nil), h.Counts...)
	return h
}

// InstanceMetrics is what an instance counts beyond its InstanceInfo.
type InstanceMetrics struct {
	InstanceInfo
	// Restarts by reason since this daemon started, indexed like
	// RestartReasons.
	Restarts [len(RestartReasons)]uint64
}

// AppMetrics is one app's figures for /metrics.
type AppMetrics struct {
	App string
	// Desired counts the instances keel keeps running: not stopped by the
	// user, not being removed.
	Desired int
	// Ready counts the instances online.
	Ready     int
	Instances []InstanceMetrics
	// ReadyDurations: spawn → ready of every process this daemon started.
	ReadyDurations Histogram
	// ReloadDurations: whole rolling reloads of the app.
	ReloadDurations Histogram
}

// Metrics returns every app's figures, ordered by name, in one call to the
// owner goroutine.
func (s *Supervisor) Metrics(ctx context.Context) ([]AppMetrics, error) {
	return call(ctx, s, func(reply func([]AppMetrics, error)) {
		out := make([]AppMetrics, 0, len(s.apps))
		for _, name := range sortedNames(s.apps) {
			a := s.apps[name]
			m := AppMetrics{
				App:             name,
				ReadyDurations:  a.readyHist.clone(),
				ReloadDurations: a.reloadHist.clone(),
			}
			for _, in := range a.insts {
				if !a.stopped && !in.removed && !in.wantStopped {
					m.Desired++
				}
				if in.status == Online {
					m.Ready++
				}
				m.Instances = append(m.Instances, InstanceMetrics{InstanceInfo: in.info(), Restarts: in.restartsBy})
			}
			out = append(out, m)
		}
		reply(out, nil)
	})
}

// countRestart counts a new run of in under the reason noted for it (see
// noteRestart), or as a crash restart if none was.
func (s *Supervisor) countRestart(in *instance) {
	in.restartsBy[reasonIndex(in.restartReason)]++
	in.restartReason = ""
}

// noteRestart records why in's next run will start, unless a reason is
// already noted.
func noteRestart(in *instance, reason string) {
	if in.restartReason == "" {
		in.restartReason = reason
	}
}

// observeReady records how long r took from spawn to ready; an adopted
// process (not spawned by this daemon) is left out.
func (s *Supervisor) observeReady(r *run) {
	if r.spawnedAt.IsZero() {
		return
	}
	r.inst.app.readyHist.observe(s.clock.Now().Sub(r.spawnedAt))
}

func sortedNames(apps map[string]*app) []string {
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
