package main

import (
	"context"
	"fmt"
	"time"

	"github.com/keel-run/keel/bench/core"
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
