package proc

import (
	"context"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ExitWatcher learns of the exits of many children with one goroutine:
// at each SIGCHLD it asks the kernel, without reaping, whether each child
// it watches has exited. A keeper process of a thousand instances then
// holds neither a thousand goroutines nor a thousand pidfds waiting.
// Checking a thousand children costs a thousand waitid calls per SIGCHLD,
// about a millisecond, and SIGCHLD comes only when a child ends.
type ExitWatcher struct {
	mu      sync.Mutex // Start registers from its caller's goroutine
	watched map[int]func()
}

// NewExitWatcher returns a watcher; Run does its work.
func NewExitWatcher() *ExitWatcher {
	return &ExitWatcher{watched: map[int]func(){}}
}

// Watch calls exited once pid, a child of this process, has exited (it is
// not reaped: exited's caller does that). exited runs on Watch's goroutine
// if the child is gone already, else on Check's.
func (w *ExitWatcher) Watch(pid int, exited func()) {
	w.mu.Lock()
	w.watched[pid] = exited
	w.mu.Unlock()
	// Its SIGCHLD may have come before it was watched. Only it is checked:
	// a thousand starts would otherwise cost a million waitid calls.
	if hasExited(pid) {
		w.mu.Lock()
		f, ok := w.watched[pid]
		delete(w.watched, pid)
		w.mu.Unlock()
		if ok { // not taken by a Check meanwhile
			f()
		}
	}
}

// Check calls the exited function of every watched child that has exited.
func (w *ExitWatcher) Check() {
	var done []func()
	w.mu.Lock()
	for pid, exited := range w.watched {
		if hasExited(pid) {
			delete(w.watched, pid)
			done = append(done, exited)
		}
	}
	w.mu.Unlock()
	for _, f := range done {
		f()
	}
}

// Run checks at the start and at each signal on sigchld (the caller
// subscribes it to SIGCHLD) until ctx is done.
func (w *ExitWatcher) Run(ctx context.Context, sigchld <-chan os.Signal) {
	for {
		w.Check()
		select {
		case <-ctx.Done():
			return
		case <-sigchld:
		}
	}
}

// hasExited reports whether the child pid has exited (it stays unreaped),
// or is no child of ours any more (ECHILD: someone else reaped it, which
// ends the wait as an exit would).
func hasExited(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		return err != nil || siginfoPid(&info) != 0
	}
}
