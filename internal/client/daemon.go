package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/proc"
)

// LogName is the daemon's log file inside KEEL_HOME: its stdout and stderr
// when EnsureDaemon starts it.
const LogName = "daemon.log"

// DefaultStartTimeout is how long EnsureDaemon waits for a daemon it
// started to answer.
const DefaultStartTimeout = 10 * time.Second

// pollEvery is how often EnsureDaemon checks whether the socket answers.
const pollEvery = 5 * time.Millisecond

// EnsureDaemon makes sure a daemon answers on the control socket. If one
// does, it returns nil at once. If the socket is absent or refuses, it
// creates KEEL_HOME (0700), starts `exe daemon` detached — its own session,
// KEEL_HOME in its environment, stdin /dev/null, stdout and stderr appended
// to $KEEL_HOME/daemon.log, working directory / — and waits until the
// socket answers. It returns an error if exe cannot be started, if the
// daemon exits with a failure before answering, if nothing answers within
// DefaultStartTimeout, or if ctx ends first; the error quotes what the
// daemon wrote to daemon.log.
//
// Several callers may race: each may start a daemon, the daemon's lock in
// KEEL_HOME lets one win, the others exit 0, and every caller waits for the
// winner's socket. If the daemon it started exits 0 and still nothing
// answers a little later (the lock holder was a daemon on its way out),
// EnsureDaemon starts another, until the deadline. When a daemon answers,
// the one EnsureDaemon started is either that daemon or has exited and been
// reaped, so no stray daemon is left to take the lock later (after a keel
// kill). EnsureDaemon never waits on a running daemon beyond that.
func (c *Client) EnsureDaemon(ctx context.Context, exe string) error {
	return c.ensureDaemon(ctx, exe, DefaultStartTimeout)
}

func (c *Client) ensureDaemon(ctx context.Context, exe string, timeout time.Duration) error {
	err := c.Ping(ctx)
	if err == nil || !errors.Is(err, ErrNoDaemon) {
		return err
	}
	if err := os.MkdirAll(c.home, 0o700); err != nil {
		return fmt.Errorf("creating KEEL_HOME: %w", err)
	}
	logPath := filepath.Join(c.home, LogName)
	pid, logStart, err := c.spawnDaemon(exe, logPath)
	if err != nil {
		return err
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	running := true
	var respawnAt time.Time
	respawnDelay := 20 * time.Millisecond
	for {
		err := c.Ping(ctx)
		if err == nil {
			if running {
				return c.settle(ctx, pid, deadline.C)
			}
			return nil
		}
		if !errors.Is(err, ErrNoDaemon) {
			return fmt.Errorf("waiting for the daemon: %w", err)
		}
		if running {
			var ws unix.WaitStatus
			wpid, werr := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			switch {
			case werr != nil && werr != unix.EINTR:
				running = false // not ours to reap (SIGCHLD ignored?); keep polling the socket
			case wpid == pid:
				running = false
				if !ws.Exited() || ws.ExitStatus() != 0 {
					return fmt.Errorf("the daemon (%s daemon, pid %d) %s before answering%s", exe, pid, describeWait(ws), logTail(logPath, logStart))
				}
				// It lost the race for the lock: another daemon holds it
				// and will answer soon, or it is on its way out (keel kill
				// just now) and a new one must be started after it.
				respawnAt = time.Now().Add(respawnDelay)
				respawnDelay = min(2*respawnDelay, 500*time.Millisecond)
			}
		} else if !respawnAt.IsZero() && time.Now().After(respawnAt) {
			respawnAt = time.Time{}
			if pid, _, err = c.spawnDaemon(exe, logPath); err != nil {
				return err
			}
			running = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the daemon: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("the daemon (%s daemon, pid %d) did not answer on %s within %s%s", exe, pid, c.sock, timeout, logTail(logPath, logStart))
		case <-tick.C:
		}
	}
}

// settle returns once the daemon this client started (pid) is either the
// one that answers or gone, so that no stray daemon can take the lock later
// (after a `keel kill`, say). A daemon that answers is not ours only when
// several clients raced; ours then loses the lock and exits 0 at once. One
// that neither answers nor exits before the deadline is killed.
func (c *Client) settle(ctx context.Context, pid int, deadline <-chan time.Time) error {
	if v, err := c.Version(ctx); err == nil && v.Pid == pid {
		return nil
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if wpid == pid || (err != nil && err != unix.EINTR) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the daemon: %w", ctx.Err())
		case <-deadline:
			unix.Kill(pid, unix.SIGKILL)
			unix.Wait4(pid, &ws, 0, nil)
			return nil
		case <-tick.C:
		}
	}
}

// spawnDaemon starts exe daemon detached and returns its pid and the size
// daemon.log had before, so that only this run's lines are quoted.
func (c *Client) spawnDaemon(exe, logPath string) (pid int, logStart int64, err error) {
	exe, err = filepath.Abs(exe)
	if err != nil {
		return 0, 0, fmt.Errorf("finding the keel binary: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, 0, fmt.Errorf("opening the daemon log: %w", err)
	}
	defer logf.Close()
	if fi, err := logf.Stat(); err == nil {
		logStart = fi.Size()
	}
	cmd := exec.Command(exe, "daemon")
	cmd.Env = append(withoutVar(os.Environ(), "KEEL_HOME"), "KEEL_HOME="+c.home)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf // stdin stays nil: /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The daemon outlives this CLI: it must not keep what the CLI's shell
	// left open (a pipe's end would keep a pipeline from finishing).
	if err := proc.CloseOnExecAbove2(); err != nil {
		return 0, 0, fmt.Errorf("starting the daemon: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("starting the daemon: %w", err)
	}
	pid = cmd.Process.Pid
	// The CLI does not wait for the daemon; the loop above reaps it only if
	// it exits while we watch.
	cmd.Process.Release()
	return pid, logStart, nil
}

func withoutVar(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func describeWait(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("was killed by %v", ws.Signal())
	}
	return "ended"
}

// logTail returns the last lines written to the daemon log since offset
// start, folded into one line, as ": daemon.log says: …", or "" if there
// are none.
func logTail(path string, start int64) string {
	const maxTail = 2048
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	from := start
	if fi.Size()-from > maxTail {
		from = fi.Size() - maxTail
	}
	b, err := io.ReadAll(io.NewSectionReader(f, from, fi.Size()-from))
	if err != nil || len(b) == 0 {
		return fmt.Sprintf(" (see %s)", path)
	}
	lines := strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' || r == '\r' })
	if from > start && len(lines) > 1 {
		lines = lines[1:] // the first line is cut
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return fmt.Sprintf("; %s says: %s", path, strings.Join(lines, " | "))
}
