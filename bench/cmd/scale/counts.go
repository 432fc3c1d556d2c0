package main

import (
	"context"
	"fmt"
	"time"

	"github.com/keel-run/keel/bench/core"
)

// row is one measurement: a manager, a layout, a count.
type row struct {
	manager     string
	apps, count int
	online      time.Duration // first start command → all online
	forkExec    time.Duration // the kernel alone, for as many processes
	mem         core.Mem      // daemon + helpers
	helpers     int
	list        time.Duration // median of the list command
	idleCPU     float64       // % of one core, manager processes only
	stop        time.Duration // the stop commands of every app, until no instance runs
	err         error
}

func (r row) String() string {
	return fmt.Sprintf("online in %.2f s (fork/exec %.2f s), PSS %.1f MB (%d helpers), ls %.1f ms, idle CPU %.2f %%, stop %.2f s",
		r.online.Seconds(), r.forkExec.Seconds(), mb(r.mem.PSS), r.helpers, ms(r.list), r.idleCPU, r.stop.Seconds())
}

// measure starts apps apps of n/apps instances each under m and measures
// one row. The caller closes m.
func measure(ctx context.Context, m manager, apps, n int, idle time.Duration) row {
	r := row{manager: m.Name(), apps: apps, count: n}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	for i := 0; i < apps; i++ {
		a := core.App{Name: appName(i), Script: "/bin/sleep", Interpreter: "none",
			Args: []string{"infinity"}, Instances: n / apps}
		if err := m.Start(ctx, a); err != nil {
			r.err = err
			return r
		}
	}
	if err := waitOnline(ctx, m, n, nil); err != nil {
		r.err = err
		return r
	}
	r.online = time.Since(t0)
	// Let start-up garbage be collected and the standby keeper come.
	if err := sleep(ctx, 3*time.Second); err != nil {
		r.err = err
		return r
	}
	pids, err := managerPids(m)
	if err != nil {
		r.err = err
		return r
	}
	if m.helpers != nil {
		r.helpers = len(pids) - 1
	}
	c0 := cpuTicks(pids)
	if err := sleep(ctx, idle); err != nil {
		r.err = err
		return r
	}
	r.idleCPU = cpuPercent(cpuTicks(pids)-c0, idle)
	for _, pid := range pids {
		if s, err := core.ReadMem(pid); err == nil {
			r.mem = r.mem.Add(s)
		}
	}
	lt, _, err := core.ListTimes(ctx, m, 5, time.Minute)
	if err != nil {
		r.err = err
		return r
	}
	r.list = core.Summarize(lt).Median
	t0 = time.Now()
	for i := 0; i < apps; i++ {
		if err := m.Stop(ctx, appName(i)); err != nil {
			r.err = err
			return r
		}
	}
	if err := waitAllStopped(ctx, m); err != nil {
		r.err = err
		return r
	}
	r.stop = time.Since(t0)
	return r
}

func appName(i int) string { return fmt.Sprintf("s%d", i) }
