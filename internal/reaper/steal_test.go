package reaper

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
)

// A child started through the Reaper keeps its exit status for its own
// Wait, however eagerly the reaper reaps: the status of an on_crash
// command under `keel run` must reach the code that ran it.
func TestChildStatusIsNotStolen(t *testing.T) {
	r := New()
	sig := make(chan os.Signal, 64)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, sig, nil) }()
	defer func() { cancel(); <-done }()

	for i := 0; i < 100; i++ {
		c := exec.Command("/bin/sh", "-c", "exit 3")
		wait, err := r.Start(c)
		if err != nil {
			t.Fatal(err)
		}
		err = wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("run %d: wait = %v, want exit status 3", i, err)
		}
	}
}
