package poll

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWithin(t *testing.T) {
	var n atomic.Int32
	if !Within(10*time.Second, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("a condition that becomes true was not seen")
	}
	if n.Load() != 3 {
		t.Fatalf("checked %d times, want 3", n.Load())
	}
	if Within(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported as met")
	}
}
