package logs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv names the helper program a re-executed test binary runs
// instead of the tests.
const helperEnv = "KEEL_LOGS_TEST_HELPER"

// helperLines is how many lines the "lines-*" helpers print.
const helperLines = 200_000

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	goleak.VerifyTestMain(m)
}

// runHelper is the child side of the process tests.
func runHelper(name string) int {
	switch name {
	case "lines-exit0", "lines-exit3", "lines-panic":
		// As fast as it can: big writes straight into the pipe.
		w := bufio.NewWriterSize(os.Stdout, 32<<10)
		for i := range helperLines {
			w.Write(numberedLine(i))
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "flush:", err)
			return 100
		}
		switch name {
		case "lines-exit3":
			os.Exit(3)
		case "lines-panic":
			panic("after " + strconv.Itoa(helperLines) + " lines")
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper", name)
	return 100
}

// numberedLine is line i of the helpers' output, "\n" included.
func numberedLine(i int) []byte {
	return fmt.Appendf(nil, "line %06d\n", i)
}

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *clock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// syncBuffer is an io.Writer the test can wait on.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed (and replaced) on every Write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until cond holds for the buffer's contents, or fails the
// test after a deadline. It returns the contents.
func (b *syncBuffer) waitFor(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		s, ch := b.buf.String(), b.changed
		b.mu.Unlock()
		if cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; have %d bytes, ending %q", what, len(s), s[max(0, len(s)-200):])
		}
	}
}
