// Package scenario runs issue 3's bench scenarios against the real keel
// daemon (and, side by side, pm2 and Node's own cluster module): rolling
// reloads under load, SIGKILL of one instance every second under load, and
// hello-world throughput with each instance's share. bench/cmd/scenarios is
// the command; this package holds the process managers, the scenarios and
// the tables they print. Every run is bounded in time, talks to 127.0.0.1
// only and stops everything it started, also on error.
package scenario

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// App is one bench app (bench/apps) and how each manager runs it.
type App struct {
	// Name is the app's name in tables and under the managers.
	Name string
	// Script is the absolute path of the .js file or the binary.
	Script string
	// Node says Script is run with node.
	Node bool
	// KeelReady is keel's --ready ("" for keel's default).
	KeelReady string
	// PM2Args are extra `pm2 start` flags (e.g. --wait-ready).
	PM2Args []string
	// KeelArgs are extra `keel start` flags.
	KeelArgs []string
}

// Manager runs n instances of one app behind 127.0.0.1:port.
type Manager interface {
	// Name is the manager's name in tables: keel, pm2, node cluster, direct.
	Name() string
	// Start starts n instances of app and returns once every one of them
	// has answered a request (bounded by StartTimeout).
	Start(ctx context.Context, app App, n, port int) error
	// Reload replaces every instance the manager's zero-downtime way and
	// returns when the manager's reload command does.
	Reload(ctx context.Context) error
	// Pids lists the app's instances' pids in instance order, 0 for an
	// instance that has no process right now.
	Pids(ctx context.Context) ([]int, error)
	// Close stops everything the manager started and removes its files.
	// It returns an error naming any process that outlived the stop (and
	// was then SIGKILLed).
	Close() error
}

// StartTimeout bounds Start.
const StartTimeout = 30 * time.Second

// stopTimeout bounds a manager's own stop command in Close.
const stopTimeout = 30 * time.Second

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL is the address the load client uses for port.
func URL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }

// WaitServing GETs url on fresh connections until n distinct instances
// (X-Keel-Instance) have answered, or timeout passes.
func WaitServing(ctx context.Context, url string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	seen := map[string]bool{}
	var last error
	for len(seen) < n {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				seen[resp.Header.Get("X-Keel-Instance")] = true
				continue
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if ctx.Err() == nil {
			last = err
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return fmt.Errorf("%d of %d instances answered %s within %v (last error: %v)", len(seen), n, url, timeout, last)
		}
	}
	return nil
}

// sleepCtx sleeps d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// run runs cmd with a bound and returns its combined output on failure in
// the error.
func run(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = time.Second
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return []byte(out.String()), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(errb.String()+" "+lastLines(out.String(), 5)))
	}
	return []byte(out.String()), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// PidsWithEnv lists the processes whose environment holds entry (such as
// "KEEL_HOME=/tmp/x"): everything a private manager home started.
func PidsWithEnv(entry string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if hasEnv(b, entry) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// hasEnv reports whether a NUL-separated environment block holds entry.
func hasEnv(environ []byte, entry string) bool {
	for _, kv := range strings.Split(string(environ), "\x00") {
		if kv == entry {
			return true
		}
	}
	return false
}

// reap waits up to grace for every process with entry in its environment
// to exit, then SIGKILLs those left, waits (bounded) for them to go, and
// returns an error naming them, or nil.
func reap(entry string, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	left := PidsWithEnv(entry)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		left = PidsWithEnv(entry)
	}
	if len(left) == 0 {
		return nil
	}
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(PidsWithEnv(entry)) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("processes with %s outlived the stop by %v and were SIGKILLed: %v", entry, grace, left)
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// every Linux this runs on).
const clockTick = 10 * time.Millisecond

// ParseStat reads the process group and the CPU time (user + system) from
// the contents of /proc/<pid>/stat.
func ParseStat(b []byte) (pgrp int, cpu time.Duration, err error) {
	// The command name is in parentheses and may hold anything, ')' too.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	pgrp, err = strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, fmt.Errorf("stat: pgrp: %w", err)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("stat: cpu times %q %q", f[11], f[12])
	}
	return pgrp, time.Duration(ut+st) * clockTick, nil
}

// ProcsCPU is the CPU time the live processes among pids have used.
func ProcsCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if _, cpu, err := ParseStat(b); err == nil {
			sum += cpu
		}
	}
	return sum
}

// GroupPids lists the processes in process group pgid.
func GroupPids(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if g, _, err := ParseStat(b); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuUser is a Manager that can say how much CPU its processes (daemon,
// helpers, instances) have used so far.
type cpuUser interface {
	ServerCPU() time.Duration
}
