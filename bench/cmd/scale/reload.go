package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/keel-run/keel/bench/core"
	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/bench/scenario"
)

// reloadRow is a reload of one app of n instances.
type reloadRow struct {
	manager string
	n       int
	command time.Duration // the reload command's wall time
	settled time.Duration // reload command → every instance online in a new process
	err     error
}

func (r reloadRow) String() string {
	return fmt.Sprintf("reload command %.2f s, all %d online in new processes after %.2f s",
		r.command.Seconds(), r.n, r.settled.Seconds())
}

// measureReload starts an app of n /bin/sleep instances under m, reloads
// it and waits until every instance is online in a new process. /bin/sleep
// has no readiness and no socket: keel restarts each instance, pm2
// (fork mode) too. The caller closes m.
func measureReload(ctx context.Context, m manager, n int) reloadRow {
	r := reloadRow{manager: m.Name(), n: n}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	a := core.App{Name: "r", Script: "/bin/sleep", Interpreter: "none", Args: []string{"infinity"}, Instances: n}
	if err := m.Start(ctx, a); err != nil {
		r.err = err
		return r
	}
	if err := waitOnline(ctx, m, n, nil); err != nil {
		r.err = err
		return r
	}
	ins, err := m.Instances(ctx)
	if err != nil {
		r.err = err
		return r
	}
	old := map[int]bool{}
	for _, in := range ins {
		old[in.PID] = true
	}
	// The reload itself, bounded: a manager that cannot reload 100
	// instances in 5 minutes has not completed it.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer rcancel()
	t0 := time.Now()
	if err := m.Reload(rctx, a.Name); err != nil {
		r.err = fmt.Errorf("after %.1f s: %w", time.Since(t0).Seconds(), err)
		return r
	}
	r.command = time.Since(t0)
	if err := waitOnline(rctx, m, n, old); err != nil {
		r.err = fmt.Errorf("after the reload command (%.1f s): %w", r.command.Seconds(), err)
		return r
	}
	r.settled = time.Since(t0)
	return r
}

// servingRow is a reload of an app of n instances that serve HTTP on one
// port, under load.
type servingRow struct {
	manager, app string
	n            int
	command      time.Duration // the reload command's wall time
	replaced     int           // instances whose pid changed
	requests     int64         // during the load: 1 s before the reload to 1 s after
	failed       int64
	failures     string // kinds and first errors
	err          error
}

func (r servingRow) String() string {
	s := fmt.Sprintf("reload command %.2f s, %d of %d replaced, %d of %d requests failed", r.command.Seconds(), r.replaced, r.n, r.failed, r.requests)
	if r.failures != "" {
		s += " (" + r.failures + ")"
	}
	return s
}

// measureServing starts n instances of app under m behind one port,
// sends 32 keep-alive connections of load from 1 s before a reload to 1 s
// after it, and counts the failed requests and the replaced instances.
// It closes m.
func measureServing(ctx context.Context, m scenario.Manager, app scenario.App, n int) (r servingRow) {
	r = servingRow{manager: m.Name(), app: app.Name, n: n}
	defer func() {
		if err := m.Close(); err != nil && r.err == nil {
			fmt.Fprintf(os.Stderr, "scale: cleaning up %s after a reload of %d %s: %s\n", m.Name(), n, app.Name, firstLine(err))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	port, err := scenario.FreePort()
	if err != nil {
		r.err = err
		return r
	}
	if err := m.Start(ctx, app, n, port); err != nil {
		r.err = err
		return r
	}
	before, err := m.Pids(ctx)
	if err != nil {
		r.err = err
		return r
	}
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type loaded struct {
		res *load.Result
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		res, err := load.Run(lctx, load.Config{URL: scenario.URL(port), Conns: 32, Duration: 10 * time.Minute})
		done <- loaded{res, err}
	}()
	if err := sleep(ctx, time.Second); err != nil {
		r.err = err
	}
	t0 := time.Now()
	if r.err == nil {
		if err := m.Reload(ctx); err != nil {
			r.err = fmt.Errorf("after %.1f s: %w", time.Since(t0).Seconds(), err)
		}
	}
	r.command = time.Since(t0)
	if r.err == nil {
		after, err := m.Pids(ctx)
		r.err = err
		r.replaced = scenario.Changed(before, after)
		if err := sleep(ctx, time.Second); err != nil {
			r.err = err
		}
	}
	stopLoad()
	l := <-done
	if l.err != nil && r.err == nil {
		r.err = l.err
	}
	if l.res != nil {
		r.requests = l.res.Requests
		var kinds []string
		for kind, c := range l.res.Failed {
			if c > 0 {
				r.failed += c
				kinds = append(kinds, fmt.Sprintf("%d %s: %s", c, kind, l.res.Errors[kind]))
			}
		}
		slices.Sort(kinds)
		r.failures = strings.Join(kinds, "; ")
	}
	return r
}
