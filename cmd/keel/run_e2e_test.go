package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
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
	"github.com/keel-run/keel/internal/client"
)

// startRun starts `keel run cfg` in the foreground as a child and returns
// it with its stdout buffer.
func (e *env) startRun(cfg string, flags ...string) (*exec.Cmd, *syncBuffer) {
	e.t.Helper()
	cmd, out, _ := e.startRunApart(cfg, flags...)
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.waitRunServes()
	return cmd, out
}

// waitRunServes waits until `keel run` answers on the control socket, so
// that the test's `keel ls` talks to it rather than starting a daemon of
// its own in the same KEEL_HOME before keel run listens.
func (e *env) waitRunServes() {
	e.t.Helper()
	c := client.New(e.home)
	poll.Until(e.t, 20*time.Second, "keel run to serve its control socket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx) == nil
	})
}

// startRunApart makes `keel run cfg flags…` with stdout and stderr
// apart; the caller starts it.
func (e *env) startRunApart(cfg string, flags ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run", cfg}, flags...)...)
	cmd.Env = append(os.Environ(), "KEEL_E2E_MAIN=1", "KEEL_HOME="+e.home, "GORACE=atexit_sleep_ms=0")
	out := &syncBuffer{mu: make(chan struct{}, 1)}
	errb := &syncBuffer{mu: make(chan struct{}, 1)}
	cmd.Stdout = out
	cmd.Stderr = errb
	e.t.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out, errb
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

// TestRunJSONLogs: keel run --log-format json --log-files=false echoes
// every line of an app that prints 200,000 lines and exits at once, as
// one JSON object a line; a line over 64 KiB comes in marked parts, a
// line that is not UTF-8 with its exact bytes, a last line without
// newline marked partial; and no log file is written in KEEL_HOME.
func TestRunJSONLogs(t *testing.T) {
	e := newEnv(t)
	const n = 200000
	const long = 150 << 10
	cfg := filepath.Join(t.TempDir(), "keel.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: chatty
    script: %s
    restart: never
    env: {KEEL_E2E_APP: lines, LINES_N: "%d", LINES_LONG: "%d", LINES_PARTIAL: "1"}
`, os.Args[0], n, long)), 0o644)
	cmd, out, errb := e.startRunApart(cfg, "--log-format", "json", "--log-files=false")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 60*time.Second, "the last line on stdout", func() bool { return strings.Contains(out.String(), "no newline at the end") })
	// The log tails live in memory: KEEL_HOME/logs links out of KEEL_HOME.
	if target, err := os.Readlink(filepath.Join(e.home, "logs")); err != nil || strings.HasPrefix(target, e.home) {
		t.Fatalf("KEEL_HOME/logs under --log-files=false: %q %v", target, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("keel run exited %d; stderr:\n%s", code, tail(errb.String(), 4000))
	}

	type object struct {
		Time       string  `json:"time"`
		App        string  `json:"app"`
		Instance   *int    `json:"instance"`
		Stream     string  `json:"stream"`
		Line       *string `json:"line"`
		LineBase64 string  `json:"line_base64"`
		Partial    bool    `json:"partial"`
		Part       int     `json:"part"`
		Parts      int     `json:"parts"`
	}
	var objs []object
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var o object
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			t.Fatalf("stdout line %d is not a log object: %v: %.200s", len(objs)+1, err, sc.Text())
		}
		if o.Time == "" || o.App != "chatty" || o.Instance == nil || *o.Instance != 0 || o.Stream != "out" || o.Line == nil {
			t.Fatalf("object %d lacks a field: %.300s", len(objs)+1, sc.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, o.Time); err != nil {
			t.Fatalf("object %d: time %q: %v", len(objs)+1, o.Time, err)
		}
		objs = append(objs, o)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// The long line: three parts of at most 64 KiB, the exact bytes back
	// when joined (the part with the 0xff byte carries line_base64).
	parts := (long + 1<<16 - 1) >> 16
	if len(objs) != parts+n+1 {
		t.Fatalf("%d objects on stdout, want %d (%d parts, %d lines, 1 partial)", len(objs), parts+n+1, parts, n)
	}
	var joined []byte
	for i, o := range objs[:parts] {
		if o.Part != i+1 || o.Parts != parts {
			t.Fatalf("part %d marked %d of %d", i+1, o.Part, o.Parts)
		}
		b := []byte(*o.Line)
		if o.LineBase64 != "" {
			b, _ = base64.StdEncoding.DecodeString(o.LineBase64)
		}
		if len(b) > 1<<16 {
			t.Fatalf("part %d holds %d bytes", i+1, len(b))
		}
		joined = append(joined, b...)
	}
	want := append(bytes.Repeat([]byte("é"), long/4), 0xff)
	want = append(want, bytes.Repeat([]byte("x"), long-len(want))...)
	if !bytes.Equal(joined, want) {
		t.Fatalf("the long line came back as %d bytes, not its %d exact bytes", len(joined), len(want))
	}
	for i, o := range objs[parts : parts+n] {
		if *o.Line != fmt.Sprintf("line %d", i+1) || o.Partial || o.Part != 0 {
			t.Fatalf("object for line %d: %+v %q", i+1, o, *o.Line)
		}
	}
	if last := objs[len(objs)-1]; *last.Line != "no newline at the end" || !last.Partial {
		t.Fatalf("the last, unterminated line: %+v", last)
	}
	// Nothing in KEEL_HOME's logs: the link to the memory directory is
	// gone with keel run, and it wrote no file of its own there.
	if ents, err := os.ReadDir(filepath.Join(e.home, "logs")); err == nil && len(ents) > 0 {
		t.Fatalf("log files in KEEL_HOME: %v", ents)
	}
}
