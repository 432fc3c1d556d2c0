package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"github.com/keel-run/keel/internal/api"
)

// startRun starts `keel run cfg` in the foreground as a child and returns
// it with its stdout buffer.
func (e *env) startRun(cfg string) (*exec.Cmd, *syncBuffer) {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "run", cfg)
	cmd.Env = append(os.Environ(), "KEEL_E2E_MAIN=1", "KEEL_HOME="+e.home, "GORACE=atexit_sleep_ms=0")
	out := &syncBuffer{mu: make(chan struct{}, 1)}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("keel run did not exit")
		return -1
	}
}

func TestRunForegroundStopsOnSIGTERM(t *testing.T) {
	e := newEnv(t)
	cfg := filepath.Join(t.TempDir(), "keel.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: a
    script: %[1]s
    env: {KEEL_E2E_APP: sleep}
  - name: b
    script: %[1]s
    instances: 2
    env: {KEEL_E2E_APP: sleep}
`, os.Args[0])), 0o644)
	cmd, out := e.startRun(cfg)
	l := e.waitFor("3 online", func(l []api.Instance) bool {
		return allStatus("a", 1, "online")(l) && allStatus("b", 2, "online")(l)
	})
	// ready: none counts an app online at spawn; wait until each says it
	// handles SIGTERM (it prints "sleeping" after signal.Notify).
	poll.Until(t, 10*time.Second, "three apps to handle SIGTERM", func() bool { return strings.Count(out.String(), "sleeping") >= 3 })
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("keel run exited %d after SIGTERM; output:\n%s", code, out.String())
	}
	for _, in := range l {
		if alive(in.Pid) {
			t.Fatalf("pid %d outlived keel run", in.Pid)
		}
	}
	// The apps' output reached keel run's stdout, to their last words.
	if got := strings.Count(out.String(), "got SIGTERM, bye"); got != 3 {
		t.Fatalf("saw %d goodbyes in keel run's output:\n%s", got, out.String())
	}
}

func TestRunForegroundFailsWhenAnAppNeedsSIGKILL(t *testing.T) {
	e := newEnv(t)
	cfg := filepath.Join(t.TempDir(), "keel.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: stubborn
    script: %s
    kill_timeout: 300ms
    env: {KEEL_E2E_APP: ignoreterm}
`, os.Args[0])), 0o644)
	cmd, out := e.startRun(cfg)
	e.waitFor("online", allStatus("stubborn", 1, "online"))
	poll.Until(t, 10*time.Second, "the app to ignore SIGTERM", func() bool { return strings.Contains(out.String(), "ignoring SIGTERM") })
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd); code == 0 {
		t.Fatalf("keel run exited 0 though its app had to be killed; output:\n%s", out.String())
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) lock() { b.mu <- struct{}{} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.String()
}
