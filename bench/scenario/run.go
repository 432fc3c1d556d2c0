package scenario

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/load"
)

// The scenarios.
const (
	ScenarioReload     = "reload"     // rolling reloads under load
	ScenarioKill       = "kill"       // SIGKILL one instance every T under load
	ScenarioThroughput = "throughput" // hello world, req/s and shares
	// ScenarioCrash: some requests crash their instance (Spec.Specials).
	ScenarioCrash = "crash"
	// ScenarioNoCrash: the crash scenario's load without the crashing
	// requests, for its req/s.
	ScenarioNoCrash = "nocrash"
)

// Spec says how to run one scenario.
type Spec struct {
	Scenario string
	// N instances, Conns load connections for D.
	N, Conns int
	D        time.Duration
	// Reloads spread over the run (ScenarioReload).
	Reloads int
	// KillEvery: one SIGKILL this often, round-robin (ScenarioKill).
	KillEvery time.Duration
	// Specials are requests to other paths (ScenarioCrash: the crashing
	// routes), counted apart from the rest.
	Specials []load.Special
}

// Run is one run of one app under one manager.
type Run struct {
	Scenario string
	App      string
	Manager  string
	Result   *load.Result // nil when the run failed before the load
	// Ops is the number of reloads or kills done.
	Ops int
	// OpTimes are the reloads' durations (the manager's command).
	OpTimes []time.Duration
	// Replaced counts instances whose pid changed across each reload; a
	// reload that replaced every instance adds N.
	Replaced int
	// Skipped counts kills skipped because the instance had no process
	// (its restart was still under way).
	Skipped int
	// Restarts is the manager's restart count at the end (-1: unknown).
	Restarts int
	// ServerCPU is the CPU time the manager's processes (daemon, helpers,
	// instances) used during the load of a throughput run (0: unknown);
	// ClientCPU is this process's (the load client's) over the same time.
	ServerCPU, ClientCPU time.Duration
	// CrashGroups are the groups the manager filed the crashes of a crash
	// run in (keel crashes); nil: not known.
	CrashGroups []CrashGroup
	// Errs are what went wrong: a failed start, reload or stop.
	Errs []string
}

// CrashGroup is one group of a manager's crash record.
type CrashGroup struct {
	Title string `json:"title"`
	Count int    `json:"count"`
}

// crashGrouper is a Manager that groups crashes (keel crashes).
type crashGrouper interface {
	CrashGroups(ctx context.Context) ([]CrashGroup, error)
}

// crashGroupsWait is how long after the load a crash run waits for the
// crashes of the processes still draining to be filed: their drain ends
// within the kill timeout StartArgs gives (5 s).
const crashGroupsWait = 15 * time.Second

// filedCrashes reads m's crash groups once as many crashes are filed as
// there were restarts (each crash restarted its instance), or when
// crashGroupsWait has passed.
func filedCrashes(ctx context.Context, m crashGrouper, restarts int) ([]CrashGroup, error) {
	deadline := time.Now().Add(crashGroupsWait)
	for {
		gs, err := m.CrashGroups(ctx)
		n := 0
		for _, g := range gs {
			n += g.Count
		}
		if err != nil || n >= restarts || !time.Now().Before(deadline) {
			return gs, err
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return gs, ctx.Err()
		}
	}
}

func (r *Run) fail(err error) {
	if err != nil {
		r.Errs = append(r.Errs, err.Error())
	}
}

// restarter is a Manager that counts restarts.
type restarter interface {
	Restarts(ctx context.Context) (int, error)
}

// Do runs spec with app under m and closes m, whatever happens. Only a
// done ctx ends it early; every other failure is recorded in the Run.
func Do(ctx context.Context, m Manager, app App, spec Spec) *Run {
	r := &Run{Scenario: spec.Scenario, App: app.Name, Manager: m.Name(), Restarts: -1}
	defer func() { r.fail(m.Close()) }()
	port, err := FreePort()
	if err != nil {
		r.fail(err)
		return r
	}
	if err := m.Start(ctx, app, spec.N, port); err != nil {
		r.fail(fmt.Errorf("start: %w", err))
		return r
	}
	cu, measureCPU := m.(cpuUser)
	measureCPU = measureCPU && spec.Scenario == ScenarioThroughput
	var server0, client0 time.Duration
	if measureCPU {
		server0, client0 = cu.ServerCPU(), selfCPU()
	}
	began := time.Now()
	type loaded struct {
		res *load.Result
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		res, err := load.Run(ctx, load.Config{URL: URL(port), Conns: spec.Conns, Duration: spec.D, Specials: spec.Specials})
		done <- loaded{res, err}
	}()
	switch spec.Scenario {
	case ScenarioReload:
		reloads(ctx, m, spec, began, r)
	case ScenarioKill:
		kills(ctx, m, spec, began, r)
	}
	l := <-done
	if measureCPU {
		r.ServerCPU, r.ClientCPU = cu.ServerCPU()-server0, selfCPU()-client0
	}
	r.Result = l.res
	r.fail(l.err)
	if rs, ok := m.(restarter); ok && spec.Scenario != ScenarioThroughput {
		if n, err := rs.Restarts(ctx); err == nil {
			r.Restarts = n
		}
	}
	if cg, ok := m.(crashGrouper); ok && spec.Scenario == ScenarioCrash && r.Restarts >= 0 {
		gs, err := filedCrashes(ctx, cg, r.Restarts)
		r.CrashGroups = gs
		r.fail(err)
	}
	return r
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReloadTimes are the moments, from the start of a run of d, at which k
// reloads start: evenly spread, none at the very start or end.
func ReloadTimes(d time.Duration, k int) []time.Duration {
	ts := make([]time.Duration, k)
	for i := range ts {
		ts[i] = d * time.Duration(i+1) / time.Duration(k+1)
	}
	return ts
}

// Changed counts the positions where both pid lists have a process and
// the pids differ.
func Changed(before, after []int) int {
	n := 0
	for i := range before {
		if i < len(after) && before[i] > 0 && after[i] > 0 && before[i] != after[i] {
			n++
		}
	}
	return n
}

func waitUntil(ctx context.Context, t time.Time) bool {
	return sleepCtx(ctx, time.Until(t))
}

func reloads(ctx context.Context, m Manager, spec Spec, began time.Time, r *Run) {
	for k, at := range ReloadTimes(spec.D, spec.Reloads) {
		if !waitUntil(ctx, began.Add(at)) {
			return
		}
		before, err := m.Pids(ctx)
		r.fail(err)
		t0 := time.Now()
		err = m.Reload(ctx)
		r.OpTimes = append(r.OpTimes, time.Since(t0))
		r.Ops++
		if err != nil {
			r.fail(fmt.Errorf("reload %d: %w", k+1, err))
			continue
		}
		after, err := m.Pids(ctx)
		r.fail(err)
		r.Replaced += Changed(before, after)
	}
}

// KillTarget picks the pid to SIGKILL for kill number k (0-based) from
// the instances' pids: instance k mod n, or the next one that has a
// process. It returns 0 when none has.
func KillTarget(pids []int, k int) int {
	n := len(pids)
	for j := 0; j < n; j++ {
		if pid := pids[(k+j)%n]; pid > 0 {
			return pid
		}
	}
	return 0
}

func kills(ctx context.Context, m Manager, spec Spec, began time.Time, r *Run) {
	for k := 0; ; k++ {
		at := spec.KillEvery * time.Duration(k+1)
		if at >= spec.D || !waitUntil(ctx, began.Add(at)) {
			return
		}
		pids, err := m.Pids(ctx)
		if err != nil {
			r.fail(err)
			continue
		}
		if len(pids) == 0 {
			r.fail(errors.New("the manager lists no instance"))
			continue
		}
		pid := pids[k%len(pids)]
		if pid == 0 { // still restarting: kill the next one that runs
			r.Skipped++
			if pid = KillTarget(pids, k); pid == 0 {
				continue
			}
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			r.fail(fmt.Errorf("kill %d: %w", pid, err))
			continue
		}
		r.Ops++
	}
}
