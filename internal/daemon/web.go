package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/keel-run/keel/internal/api"
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
		return api.Result{}, d.wrap(err)
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
			return api.Result{}, d.wrap(err)
		}
		res.Instances = append(res.Instances, d.instances(r)...)
	}
	if !found {
		return api.Result{}, d.wrap(&supervisor.NotFoundError{What: fmt.Sprintf("app %q", t.App)})
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
		return d.wrap(err)
	}
	snap := &metrics.Snapshot{Apps: apps, Stats: d.stats.get()}
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
