// Package reaper makes a process a good init: it adopts orphaned
// descendants (PR_SET_CHILD_SUBREAPER) and reaps every child that exits, so
// no zombie is ever left — what `keel run` needs as a container's PID 1.
//
// Reaping with wait4(-1) may take the status of a child that another part
// of the program waits for; the keeper client tolerates that (ECHILD), and
// nothing else in keel depends on a child's exit status.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"os"

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

// Run reaps exited children each time sigchld delivers, and once at the
// start, until ctx is done. The caller subscribes sigchld to SIGCHLD.
// onReap, if not nil, hears each reaped pid.
func Run(ctx context.Context, sigchld <-chan os.Signal, onReap func(pid int, ws unix.WaitStatus)) {
	for {
		ReapAll(onReap)
		select {
		case <-ctx.Done():
			return
		case <-sigchld:
		}
	}
}

// ReapAll reaps every child that has exited, without blocking.
func ReapAll(onReap func(pid int, ws unix.WaitStatus)) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if onReap != nil {
			onReap(pid, ws)
		}
	}
}
