package reaper

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv("REAPER_HELPER") == "orphan" {
		// Start a grandchild and exit at once, orphaning it.
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "REAPER_HELPER=sleep")
		c.Stdout = os.Stdout
		if err := c.Start(); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString(strconv.Itoa(c.Process.Pid) + "\n")
		os.Exit(0)
	}
	if os.Getenv("REAPER_HELPER") == "sleep" {
		time.Sleep(200 * time.Millisecond) // the orphan's whole life; not synchronisation
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// An orphaned grandchild is reparented to us and reaped when it exits:
// its pid reaches onReap and no zombie remains.
func TestOrphanIsAdoptedAndReaped(t *testing.T) {
	if err := BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	ctx, cancel := context.WithCancel(context.Background())
	reaped := make(chan int, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		New().Run(ctx, sig, func(pid int, _ unix.WaitStatus) { reaped <- pid })
	}()
	defer func() { cancel(); <-done }()

	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), "REAPER_HELPER=orphan")
	out, err := c.Output() // the reaper may take the child's status first
	if err != nil && !strings.Contains(err.Error(), "no child processes") && !strings.Contains(err.Error(), "waitid") {
		t.Fatalf("helper: %v", err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper said %q", out)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case pid := <-reaped:
			if pid == orphan {
				if _, err := os.Stat("/proc/" + strconv.Itoa(orphan)); err == nil {
					t.Fatalf("pid %d still in /proc after reaping", orphan)
				}
				return
			}
		case <-deadline:
			t.Fatalf("orphan %d was never reaped", orphan)
		}
	}
}

// Owns names a child started through Start until its Wait has reaped it,
// and no other process.
func TestOwnsTheChildrenStartStarted(t *testing.T) {
	r := New()
	c := exec.Command("/bin/sleep", "60")
	wait, err := r.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	if !r.Owns(pid) {
		t.Errorf("a running child started through Start is not owned")
	}
	if r.Owns(os.Getpid()) || r.Owns(os.Getppid()) {
		t.Errorf("a process Start did not start is owned")
	}
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err == nil {
		t.Fatalf("the killed child's wait: nil error")
	}
	if r.Owns(pid) {
		t.Errorf("a reaped child is still owned")
	}
}
