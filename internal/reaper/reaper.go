// Package reaper makes a process a good init: it adopts orphaned
// descendants (PR_SET_CHILD_SUBREAPER) and reaps every child that exits, so
// no zombie is ever left — what `keel run` needs as a container's PID 1.
//
// Children that keel starts itself go through Reaper.Start, which keeps
// their exit status for their own Wait.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes orphaned descendants of this process its children
// instead of init's. A PID 1 is one already.
func BecomeSubreaper() error {
	if os.Getpid() == 1 {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("becoming a subreaper: %w", err)
	}
	return nil
}

// Reaper reaps exited children, except those started through its Start:
// their status belongs to their own Wait. (wait4(-1) would take it: an
// on_crash command run under `keel run` would fail with ECHILD.)
type Reaper struct {
	// starting is read-held while a child starts and is registered, and
	// held while reaping, so that a child that exits at once is never
	// taken for an orphan.
	starting sync.RWMutex
	mu       sync.Mutex
	own      map[int]bool
}

// New returns a Reaper; Run starts its work.
func New() *Reaper { return &Reaper{own: map[int]bool{}} }

// Start starts cmd as a child that the reaper leaves alone, and returns
// its Wait. A nil Reaper just starts it.
func (r *Reaper) Start(cmd *exec.Cmd) (wait func() error, err error) {
	if r == nil {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return cmd.Wait, nil
	}
	r.starting.RLock()
	defer r.starting.RUnlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	r.mu.Lock()
	r.own[pid] = true
	r.mu.Unlock()
	return func() error {
		err := cmd.Wait()
		r.mu.Lock()
		delete(r.own, pid)
		r.mu.Unlock()
		return err
	}, nil
}

// Owns reports whether pid is a child started through Start (or left
// with Leave) that its Wait has not reaped yet.
func (r *Reaper) Owns(pid int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.own[pid]
}

// Leave makes the reaper leave pid, a child started without Start, to
// its own waiter. Call it before Run, or the child may be reaped first.
func (r *Reaper) Leave(pid int) {
	r.mu.Lock()
	r.own[pid] = true
	r.mu.Unlock()
}

// Run reaps exited children each time sigchld delivers, and once at the
// start, until ctx is done. The caller subscribes sigchld to SIGCHLD.
// onReap, if not nil, hears each reaped pid.
func (r *Reaper) Run(ctx context.Context, sigchld <-chan os.Signal, onReap func(pid int, ws unix.WaitStatus)) {
	for {
		r.ReapAll(onReap)
		select {
		case <-ctx.Done():
			return
		case <-sigchld:
		}
	}
}

// ReapAll reaps every child that has exited and is not one Start
// started, without blocking.
func (r *Reaper) ReapAll(onReap func(pid int, ws unix.WaitStatus)) {
	r.starting.Lock()
	defer r.starting.Unlock()
	for _, pid := range children() {
		if r.Owns(pid) {
			continue
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for errors.Is(err, unix.EINTR) {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if err == nil && got == pid && onReap != nil {
			onReap(pid, ws)
		}
	}
}

// children lists this process's children: from each thread's
// /proc/self/task/<tid>/children, or — where the kernel has no such
// file — from every process's parent in /proc/<pid>/stat.
func children() []int {
	var out []int
	tasks, err := os.ReadDir("/proc/self/task")
	if err == nil {
		ok := true
		for _, t := range tasks {
			b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
			if errors.Is(err, fs.ErrNotExist) && t.Name() == strconv.Itoa(os.Getpid()) {
				ok = false
				break
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					out = append(out, pid)
				}
			}
		}
		if ok {
			return out
		}
	}
	out = out[:0]
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}
