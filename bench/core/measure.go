package core

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

//go:embed apps
var apps embed.FS

// WriteApps writes the bench's scripts (apps/http.js, loop.py, loop.sh)
// into dir and returns the directory they are in.
func WriteApps(dir string) (string, error) {
	err := fs.WalkDir(apps, "apps", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := apps.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	})
	return filepath.Join(dir, "apps"), err
}

// Config is what Measure runs.
type Config struct {
	AppDir  string        // from WriteApps
	Stamp   string        // the probe app's binary (bench/core/stamp)
	Runs    int           // list command runs
	Kills   int           // respawns measured
	Crash   time.Duration // how long to watch the crash loop
	Settle  time.Duration // wait before sampling memory
	Samples int           // memory samples
	// Helpers lists per-process helper processes to count beside the
	// daemon (keel's keepers); nil when the manager has none.
	Helpers func() []int
	Log     func(format string, args ...any) // progress, to stderr
}

// The probe app's min_uptime: the kill of a run longer than this restarts
// at once, with no backoff.
const probeMinUptime = 300 * time.Millisecond

// Result is everything measured for one manager.
type Result struct {
	Manager    string
	List       Summary // wall time of the list command
	Floor      Summary // the CLI's bare start-up (keel version, no daemon)
	Idle, Busy Memory  // after start and settle; after the list runs
	Respawn    Summary // SIGKILL → the replacement's main
	Exec       Summary // the probe's own exec → main, run directly
	Crash      CrashLoop
}

// Memory is the memory of a manager's processes.
type Memory struct {
	Daemon       Mem   // the sample with the median VmRSS
	MinRSS       int64 // the smallest daemon VmRSS sampled
	MaxRSS       int64 // the largest
	Helpers      []Mem // each helper (keel: keeper), last sample
	HelpersTotal Mem   // their sum
	Apps         Mem   // the instances themselves, summed
}

// Measure starts 4 apps under m (a Node http server, the Go probe app, a
// python3 sleep loop, a shell loop) and measures the list command, memory,
// respawn after SIGKILL and a crash loop. The caller closes m.
func Measure(ctx context.Context, m Manager, cfg Config) (*Result, error) {
	res := &Result{Manager: m.Name()}
	probe, err := ListenStamps()
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	four := []App{
		{Name: "http", Script: filepath.Join(cfg.AppDir, "http.js")},
		{Name: "go", Script: cfg.Stamp, Interpreter: "none", Args: []string{probe.Addr()}, MinUptime: probeMinUptime},
		{Name: "py", Script: filepath.Join(cfg.AppDir, "loop.py"), Interpreter: "python3"},
		{Name: "sh", Script: filepath.Join(cfg.AppDir, "loop.sh"), Interpreter: "sh"},
	}
	cfg.Log("%s: starting 4 apps", m.Name())
	for _, a := range four {
		if err := m.Start(ctx, a); err != nil {
			return nil, err
		}
	}
	first, err := probe.Next(ctx, 20*time.Second, nil)
	if err != nil {
		return nil, err
	}
	if err := waitOnline(ctx, m, 4, 20*time.Second); err != nil {
		return nil, err
	}

	if err := sleep(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	if res.Idle, err = measureMemory(ctx, m, cfg); err != nil {
		return nil, err
	}
	cfg.Log("%s: %d list runs", m.Name(), cfg.Runs)
	lt, ft, err := ListTimes(ctx, m, cfg.Runs, 3*time.Minute)
	if err != nil {
		return nil, err
	}
	res.List, res.Floor = Summarize(lt), Summarize(ft)
	if res.Busy, err = measureMemory(ctx, m, cfg); err != nil {
		return nil, err
	}

	cfg.Log("%s: %d direct execs of the probe, then %d kills", m.Name(), cfg.Kills, cfg.Kills)
	et, err := ExecTimes(ctx, cfg.Stamp, cfg.Kills)
	if err != nil {
		return nil, err
	}
	res.Exec = Summarize(et)
	rt, err := Respawn(ctx, m, probe, "go", first, cfg.Kills, probeMinUptime+200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	res.Respawn = Summarize(rt)

	cfg.Log("%s: crash loop for %v", m.Name(), cfg.Crash)
	crash, err := ListenStamps()
	if err != nil {
		return nil, err
	}
	defer crash.Close()
	res.Crash, err = RunCrashLoop(ctx, m, crash,
		App{Name: "crash", Script: cfg.Stamp, Interpreter: "none", Args: []string{crash.Addr(), "exit"}}, cfg.Crash)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// waitOnline waits until m lists n instances, all online.
func waitOnline(ctx context.Context, m Manager, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ins, err := m.Instances(ctx)
		if err != nil {
			return err
		}
		online := 0
		for _, in := range ins {
			if in.Status == "online" {
				online++
			}
		}
		if online == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d instances online after %v: %+v", m.Name(), online, n, timeout, ins)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// ListTimes runs m's list command runs times, after 3 warm-up runs, and
// returns each wall time: from just before the fork to the exit, all of
// its output read. It stops early when limit has passed. If m has a
// FloorCommand (the CLI's bare start-up), that runs alternately with the
// list command, and its times are returned too.
func ListTimes(ctx context.Context, m Manager, runs int, limit time.Duration) (list, floor []time.Duration, err error) {
	f, hasFloor := m.(interface {
		FloorCommand(context.Context) *exec.Cmd
	})
	deadline := time.Now().Add(limit)
	for i := -3; i < runs && time.Now().Before(deadline); i++ {
		d, err := wallTime(ctx, m.ListCommand(ctx))
		if err != nil {
			return nil, nil, err
		}
		if i >= 0 {
			list = append(list, d)
		}
		if hasFloor {
			if d, err = wallTime(ctx, f.FloorCommand(ctx)); err != nil {
				return nil, nil, err
			}
			if i >= 0 {
				floor = append(floor, d)
			}
		}
	}
	return list, floor, nil
}

// wallTime runs c and returns the time from just before its fork to its
// exit, all of its output read.
func wallTime(ctx context.Context, c *exec.Cmd) (time.Duration, error) {
	t0 := time.Now()
	out, err := c.Output()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%v: %w", c.Args, err)
	}
	if len(out) == 0 || ctx.Err() != nil {
		return 0, errors.Join(ctx.Err(), fmt.Errorf("%v printed nothing", c.Args))
	}
	return d, nil
}

func measureMemory(ctx context.Context, m Manager, cfg Config) (Memory, error) {
	pid, err := m.DaemonPID()
	if err != nil {
		return Memory{}, err
	}
	var mem Memory
	var samples []Mem
	for i := 0; i < cfg.Samples; i++ {
		if i > 0 {
			if err := sleep(ctx, 300*time.Millisecond); err != nil {
				return Memory{}, err
			}
		}
		s, err := ReadMem(pid)
		if err != nil {
			return Memory{}, fmt.Errorf("%s daemon: %w", m.Name(), err)
		}
		samples = append(samples, s)
	}
	mem.Daemon, mem.MinRSS, mem.MaxRSS = MedianMem(samples)
	if cfg.Helpers != nil {
		for _, h := range cfg.Helpers() {
			if s, err := ReadMem(h); err == nil {
				mem.Helpers = append(mem.Helpers, s)
				mem.HelpersTotal = mem.HelpersTotal.Add(s)
			}
		}
	}
	ins, err := m.Instances(ctx)
	if err != nil {
		return Memory{}, err
	}
	for _, in := range ins {
		if s, err := ReadMem(in.PID); err == nil && in.PID > 0 {
			mem.Apps = mem.Apps.Add(s)
		}
	}
	return mem, nil
}

// ExecTimes starts the probe directly n times and returns, for each, the
// time from just before the fork to the probe's stamp: the app's own
// exec-to-main time, which a respawn includes too. Each run is SIGKILLed
// and reaped before the next.
func ExecTimes(ctx context.Context, stamp string, n int) ([]time.Duration, error) {
	st, err := ListenStamps()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var ds []time.Duration
	for i := 0; i < n; i++ {
		c := exec.Command(stamp, st.Addr())
		t0 := time.Now().Round(0) // wall clock, as the stamp is
		if err := c.Start(); err != nil {
			return nil, err
		}
		s, err := st.Next(ctx, 10*time.Second, func(s Stamp) bool { return s.PID == c.Process.Pid })
		c.Process.Kill()
		c.Wait()
		if err != nil {
			return nil, err
		}
		ds = append(ds, s.At.Sub(t0))
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// Respawn SIGKILLs app's process kills times and returns, for each, the
// time from the kill to the replacement's stamp. Before each kill it waits
// until m lists the stamped process online and it has run for stable
// (longer than its min_uptime, so the restart is immediate).
func Respawn(ctx context.Context, m Manager, st *Stamps, app string, cur Stamp, kills int, stable time.Duration) ([]time.Duration, error) {
	var ds []time.Duration
	for i := 0; i < kills; i++ {
		if err := waitListed(ctx, m, app, cur.PID, 10*time.Second); err != nil {
			return nil, err
		}
		if err := sleep(ctx, time.Until(cur.At.Add(stable))); err != nil {
			return nil, err
		}
		st.Drain()
		t0 := time.Now().Round(0)
		if err := syscall.Kill(cur.PID, syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("kill %d: %w", cur.PID, err)
		}
		old := cur.PID
		next, err := st.Next(ctx, 10*time.Second, func(s Stamp) bool { return s.PID != old })
		if err != nil {
			return nil, fmt.Errorf("%s: no replacement after SIGKILL of %d: %w", m.Name(), old, err)
		}
		ds = append(ds, next.At.Sub(t0))
		cur = next
	}
	return ds, nil
}

// waitListed waits until m lists app online with pid.
func waitListed(ctx context.Context, m Manager, app string, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ins, err := m.Instances(ctx)
		if err != nil {
			return err
		}
		for _, in := range ins {
			if in.App == app && in.PID == pid && in.Status == "online" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not online as pid %d within %v: %+v", m.Name(), app, pid, timeout, ins)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// CrashLoop is what a manager does with a program that exits 1 at once,
// under its default restart settings.
type CrashLoop struct {
	For                  time.Duration // how long it was watched from the first start
	Restarts3s, Restarts int           // starts after the first (counted by stamps) within 3 s, within For
	LastStart            time.Duration // of the last start seen, since the first
	Listed3s, Listed     Instance      // the manager's own row at 3 s and at For
}

// RunCrashLoop starts a and watches it for d from its first start.
func RunCrashLoop(ctx context.Context, m Manager, st *Stamps, a App, d time.Duration) (CrashLoop, error) {
	cl := CrashLoop{For: d}
	if err := m.Start(ctx, a); err != nil {
		return cl, err
	}
	first, err := st.Next(ctx, 20*time.Second, nil)
	if err != nil {
		return cl, err
	}
	row := func() Instance {
		ins, _ := m.Instances(ctx)
		for _, in := range ins {
			if in.App == a.Name {
				return in
			}
		}
		return Instance{}
	}
	at3 := time.NewTimer(time.Until(first.At.Add(3 * time.Second)))
	defer at3.Stop()
	end := time.NewTimer(time.Until(first.At.Add(d)))
	defer end.Stop()
	for {
		select {
		case s := <-st.c:
			since := s.At.Sub(first.At)
			if since <= 3*time.Second {
				cl.Restarts3s++
			}
			if since <= d {
				cl.Restarts++
				cl.LastStart = max(cl.LastStart, since)
			}
		case <-at3.C:
			cl.Listed3s = row()
		case <-end.C:
			cl.Listed = row()
			if cl.Listed3s.App == "" { // d is 3 s: both timers fired at once
				cl.Listed3s = cl.Listed
			}
			return cl, nil
		case <-ctx.Done():
			return cl, ctx.Err()
		}
	}
}

// sleep waits d (nothing if d ≤ 0) or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
