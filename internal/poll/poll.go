// Package poll is for tests that must wait for a condition no event
// announces (a file appearing, a process's state, output on a terminal):
// it checks the condition often, and fails the test at a deadline. It is
// the one place keel's tests poll, so none of them sleeps to synchronise.
package poll

import (
	"testing"
	"time"
)

// Interval is how often Until checks its condition.
const Interval = 5 * time.Millisecond

// Until calls cond until it returns true, failing t (t.Fatalf, naming
// what was awaited) if it has not after timeout. Call it from the test's
// own goroutine.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Within calls cond until it returns true or timeout passes, and reports
// whether it did.
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}
