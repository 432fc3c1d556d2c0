package proc_test

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	"github.com/keel-run/keel/internal/proc"
)

// One watcher tells every child's exit, those that exit at once (perhaps
// before they are watched) and those killed later, with no goroutine per
// child while they run.
func TestExitWatcherTellsEachExit(t *testing.T) {
	w := proc.NewExitWatcher()
	sigchld := make(chan os.Signal, 16)
	signal.Notify(sigchld, syscall.SIGCHLD)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx, sigchld) }()
	t.Cleanup(func() { cancel(); <-done; signal.Stop(sigchld) })

	const n = 20
	before := runtime.NumGoroutine()
	var sleepers, exiters []*proc.Process
	for i := range n {
		sleepers = append(sleepers, start(t, proc.Options{Argv: []string{self(t), helperArg, "sleep"}, Exits: w}))
		exiters = append(exiters, start(t, proc.Options{Argv: []string{self(t), helperArg, "exit", strconv.Itoa(i + 1)}, Env: childEnv(), Exits: w}))
	}
	for i, p := range exiters {
		if e := waitExit(t, p); e.Code != i+1 {
			t.Fatalf("exiter %d: exit %+v, want code %d", i, e, i+1)
		}
	}
	// The exiters' waits are over; what runs now runs for the sleepers.
	if extra := runtime.NumGoroutine() - before; extra >= n {
		t.Errorf("%d goroutines more with %d children running, want fewer than one each", extra, n)
	}
	for _, p := range sleepers {
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range sleepers {
		if e := waitExit(t, p); e.Signal != syscall.SIGKILL {
			t.Fatalf("sleeper %d: exit %+v, want SIGKILL", i, e)
		}
	}
}
