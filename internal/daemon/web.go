package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/keeper"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/metrics"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
	"github.com/keel-run/keel/internal/web"
)

// webListener owns the optional web listener. It holds nothing but a nil
// server while off: the listener's goroutines and buffers exist only
// while it is on.
type webListener struct {
	mu     sync.Mutex // guards the fields below; held while switching
	srv    *web.Server
	listen string // the address asked for while on
	bound  string // the address bound: listen with the port chosen

	procMu sync.Mutex // guards proc; apart from mu, which a switch holds while requests finish
	proc   metrics.ProcessReader

	logs     logCounter
	stopLogs context.CancelFunc // ends the log count poll while on
	logsDone chan struct{}
}

// Web switches the listener on or off, keeping the setting in KEEL_HOME
// so that the next daemon does the same.
func (d *Daemon) Web(ctx context.Context, req api.WebRequest) (api.WebInfo, error) {
	if d.o.Foreground {
		return api.WebInfo{}, fmt.Errorf("keel web: not available under keel run (use --health for probes)")
	}
	d.web.mu.Lock()
	defer d.web.mu.Unlock()
	if req.Off {
		d.stopWebLocked()
		cur, _ := web.LoadSettings(d.o.Home)
		cur.On = false
		if err := web.SaveSettings(d.o.Home, cur); err != nil {
			return api.WebInfo{}, err
		}
		return api.WebInfo{Listen: cur.Listen}, nil
	}
	addr := req.Listen
	if addr == "" {
		cur, _ := web.LoadSettings(d.o.Home)
		addr = cur.Listen
		if addr == "" {
			addr = web.DefaultListen
		}
	}
	if _, err := web.CheckListen(addr); err != nil {
		return api.WebInfo{}, err
	}
	token, err := web.LoadOrCreateToken(d.o.Home)
	if err != nil {
		return api.WebInfo{}, err
	}
	if d.web.srv == nil || addr != d.web.listen {
		// Bind the new address before letting go of the old one, so a
		// refused address leaves the listener as it was.
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return api.WebInfo{}, fmt.Errorf("keel web: listening on %s: %w", addr, err)
		}
		d.stopWebLocked()
		d.web.srv = web.Serve(ln, token, d, d.log.With("component", "web"))
		pctx, stop := context.WithCancel(context.Background())
		d.web.stopLogs, d.web.logsDone = stop, make(chan struct{})
		go d.pollLogBytes(pctx, d.web.logsDone)
		d.web.listen, d.web.bound = addr, ln.Addr().String()
		d.log.Info("web listener on", "listen", d.web.bound)
	}
	if err := web.SaveSettings(d.o.Home, web.Settings{On: true, Listen: addr}); err != nil {
		return api.WebInfo{}, err
	}
	return api.WebInfo{URL: web.URL(d.web.bound, token), Listen: d.web.bound, Token: token, On: true}, nil
}

// restoreWeb switches the listener on at daemon start if it was on.
func (d *Daemon) restoreWeb(ctx context.Context) {
	s, err := web.LoadSettings(d.o.Home)
	if err != nil {
		d.log.Error("web listener not restored", "err", err)
		return
	}
	if !s.On {
		return
	}
	if _, err := d.Web(ctx, api.WebRequest{Listen: s.Listen}); err != nil {
		d.log.Error("web listener not restored", "listen", s.Listen, "err", err)
	}
}

func (d *Daemon) stopWebLocked() {
	if d.web.srv != nil {
		d.web.stopLogs()
		<-d.web.logsDone
		d.web.srv.Close()
		d.web.srv = nil
		d.web.listen, d.web.bound = "", ""
		d.log.Info("web listener off")
	}
}

func (d *Daemon) closeWeb() {
	d.web.mu.Lock()
	defer d.web.mu.Unlock()
	d.stopWebLocked()
}

// StartStopped starts the target's instances that are stopped or errored
// (the dashboard's start button).
func (d *Daemon) StartStopped(ctx context.Context, t spec.Target) (api.Result, error) {
	l, err := d.sup.List(ctx)
	if err != nil {
		return api.Result{}, err
	}
	var res api.Result
	found := false
	for _, in := range l {
		if in.App != t.App || (t.Instance >= 0 && in.Instance != t.Instance) {
			continue
		}
		found = true
		if in.Status != supervisor.Stopped && in.Status != supervisor.Errored {
			continue
		}
		r, err := d.sup.Restart(ctx, spec.Target{App: in.App, Instance: in.Instance}, "start")
		if err != nil {
			return api.Result{}, err
		}
		res.Instances = append(res.Instances, d.instances(r)...)
	}
	if !found {
		return api.Result{}, &spec.NotFoundError{What: fmt.Sprintf("app %q", t.App)}
	}
	if len(res.Instances) == 0 {
		res.Message = "nothing to start: every instance runs"
	}
	return res, nil
}

// WriteMetrics renders one /metrics scrape from what the daemon already
// holds: the supervisor's snapshot, the stats cache (no /proc read per
// instance) and the crash groups.
func (d *Daemon) WriteMetrics(ctx context.Context, w io.Writer, f metrics.Format) error {
	apps, err := d.sup.Metrics(ctx)
	if err != nil {
		return err
	}
	snap := &metrics.Snapshot{Apps: apps, Stats: d.stats.get(), LogBytes: d.web.logs.snapshot()}
	for _, g := range d.crash.groups("") {
		snap.Crashes = append(snap.Crashes, metrics.CrashGroup{App: g.App, Group: g.ID, Count: g.Count})
	}
	d.web.procMu.Lock()
	p, err := d.web.proc.Read()
	d.web.procMu.Unlock()
	if err == nil {
		snap.Process = p
	}
	return metrics.Write(w, snap, f)
}

// FollowLogs writes the target's last lines and then new ones, as JSON
// lines, until ctx is done.
func (d *Daemon) FollowLogs(ctx context.Context, w io.Writer, t spec.Target, lines int) error {
	return logs.Print(ctx, w, logs.PrintOptions{Home: d.o.Home, Target: t, Lines: lines, Follow: true, JSON: true})
}

// logPollEvery is how often, while the listener is on, the keepers are
// asked how much their apps wrote (keel_log_bytes_total). Bytes written
// after a keeper's last answer and before its exit are not counted.
const logPollEvery = 5 * time.Second

func (d *Daemon) pollLogBytes(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(logPollEvery)
	defer t.Stop()
	for {
		d.web.logs.add(d.spawn.LogBytes())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logCounter turns the keepers' per-process counts into per-app counters
// that only grow: a keeper's count starts at zero with its process.
type logCounter struct {
	mu     sync.Mutex
	last   map[string]keeper.LogCount // by keeper id
	totals map[string]*[2]uint64      // by app: out, err
}

func (c *logCounter) add(counts []keeper.LogCount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last, c.totals = map[string]keeper.LogCount{}, map[string]*[2]uint64{}
	}
	seen := make(map[string]bool, len(counts))
	for _, n := range counts {
		seen[n.ID] = true
		prev := c.last[n.ID]
		t := c.totals[n.App]
		if t == nil {
			t = new([2]uint64)
			c.totals[n.App] = t
		}
		if n.Out >= prev.Out {
			t[0] += n.Out - prev.Out
		}
		if n.Err >= prev.Err {
			t[1] += n.Err - prev.Err
		}
		c.last[n.ID] = n
	}
	for id := range c.last {
		if !seen[id] {
			delete(c.last, id)
		}
	}
}

func (c *logCounter) snapshot() []metrics.LogBytes {
	c.mu.Lock()
	defer c.mu.Unlock()
	apps := make([]string, 0, len(c.totals))
	for a := range c.totals {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	out := make([]metrics.LogBytes, 0, 2*len(apps))
	for _, a := range apps {
		t := c.totals[a]
		out = append(out, metrics.LogBytes{App: a, Stream: "out", Bytes: t[0]}, metrics.LogBytes{App: a, Stream: "err", Bytes: t[1]})
	}
	return out
}
