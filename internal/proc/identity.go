package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Identity pins a pid to one process: the pid plus the process's start
// time, so that a recycled pid is never mistaken for it. It is what a
// state file records to find a process again after its parent died.
type Identity struct {
	Pid int `json:"pid"`
	// Start is the start time in clock ticks after boot (field 22 of
	// /proc/<pid>/stat).
	Start uint64 `json:"start"`
}

// Identify reads the identity of a live (or zombie) process.
func Identify(pid int) (Identity, error) {
	st, err := readStat(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Pid: pid, Start: st.start}, nil
}

type stat struct {
	state byte
	start uint64
}

// readStat parses /proc/<pid>/stat. The command name may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, fmt.Errorf("reading stat of pid %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); the start time is field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("pid %d: malformed stat", pid)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("pid %d: malformed start time: %w", pid, err)
	}
	return stat{state: f[0][0], start: start}, nil
}

// Running reports whether the process is still running: it exists, has
// the recorded start time, and is not a zombie.
func (id Identity) Running() bool {
	st, err := readStat(id.Pid)
	return err == nil && st.start == id.Start && st.state != 'Z' && st.state != 'X'
}

// KillGroup sends sig to the process group that id's process leads. It
// does nothing, and returns nil, when the pid now belongs to another
// process (Linux does not hand out a pid that is still some group's id, so
// the old group is then empty) or when no member of the group is left. A
// group whose leader is already gone is still signalled: its remaining
// members cannot belong to anyone else.
func (id Identity) KillGroup(sig syscall.Signal) error {
	if id.Pid <= 1 {
		return fmt.Errorf("refusing to signal process group %d", id.Pid)
	}
	st, err := readStat(id.Pid)
	if err == nil && st.start != id.Start {
		return nil
	}
	if err := unix.Kill(-id.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling process group %d: %w", id.Pid, err)
	}
	return nil
}

// Signal sends sig to the process alone, unless its pid now belongs to
// another process or it is gone (then it returns nil).
func (id Identity) Signal(sig syscall.Signal) error {
	if id.Pid <= 1 {
		return fmt.Errorf("refusing to signal pid %d", id.Pid)
	}
	if st, err := readStat(id.Pid); err != nil || st.start != id.Start {
		return nil
	}
	if err := unix.Kill(id.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling pid %d: %w", id.Pid, err)
	}
	return nil
}

// WaitGone blocks until the process has exited (a zombie counts as
// exited) or ctx is done, without polling: it waits on a pidfd. It returns
// nil at once when the process is already gone or its pid was reused.
func (id Identity) WaitGone(ctx context.Context) error {
	fd, err := unix.PidfdOpen(id.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("watching pid %d: %w", id.Pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	// Checked after the pidfd exists: from here on the pid cannot be reused.
	if st, err := readStat(id.Pid); err != nil || st.start != id.Start {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := f.SetReadDeadline(dl); err != nil {
			return fmt.Errorf("watching pid %d: %w", id.Pid, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("watching pid %d: %w", id.Pid, err)
	}
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Our deadline is ctx's: its own error may lag a moment behind.
		if err = ctx.Err(); err == nil {
			err = context.DeadlineExceeded
		}
	}
	return fmt.Errorf("waiting for pid %d to exit: %w", id.Pid, err)
}
