package guard

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait in these tests.
const waitFor = 10 * time.Second

var errSentinel = errors.New("sentinel")

func explodeWithSentinel() error { panic(errSentinel) }

func TestRunTurnsPanicIntoErrorWithStack(t *testing.T) {
	err := Run(explodeWithSentinel)
	var pe *PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Run returned %T %v, want *PanicError", err, err)
	}
	if pe.Value != errSentinel {
		t.Errorf("Value = %v, want the sentinel", pe.Value)
	}
	if !errors.Is(err, errSentinel) {
		t.Error("errors.Is(err, sentinel) = false; PanicError must unwrap to an error value")
	}
	if got := err.Error(); got != "panic: sentinel" {
		t.Errorf("Error() = %q", got)
	}
	stack := string(pe.Stack)
	for _, want := range []string{"goroutine ", "panic(", "guard.explodeWithSentinel", "panic_test.go"} {
		if !strings.Contains(stack, want) {
			t.Errorf("stack lacks %q:\n%s", want, stack)
		}
	}
}

func TestRunPanicValues(t *testing.T) {
	var m map[string]int
	err := Run(func() error { m["x"] = 1; return nil })
	var rerr runtime.Error
	if !errors.As(err, &rerr) {
		t.Errorf("nil map write: errors.As(runtime.Error) failed on %v", err)
	}

	err = Run(func() error { panic(nil) })
	var nilErr *runtime.PanicNilError
	if !errors.As(err, &nilErr) {
		t.Errorf("panic(nil): got %v, want a *runtime.PanicNilError inside", err)
	}

	err = Run(func() error { panic(42) })
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != 42 || pe.Unwrap() != nil || err.Error() != "panic: 42" {
		t.Errorf("panic(42): got %#v", err)
	}

	err = Run(func() error { panic(http.ErrAbortHandler) })
	if !errors.Is(err, http.ErrAbortHandler) {
		t.Errorf("panic(http.ErrAbortHandler): errors.Is failed on %v", err)
	}
}

func TestRunPassesThroughReturnedErrors(t *testing.T) {
	if err := Run(func() error { return nil }); err != nil {
		t.Errorf("Run(nil-returning) = %v", err)
	}
	if err := Run(func() error { return errSentinel }); err != errSentinel {
		t.Errorf("Run returned %v, want the function's own error unchanged", err)
	}
}

func TestRepanickedPanicErrorKeepsItsIdentity(t *testing.T) {
	first := Run(explodeWithSentinel)
	second := Run(func() error { panic(first) })
	if second != first {
		t.Errorf("re-panicking a *PanicError made a new one: %p vs %p", second, first)
	}
}

func TestRecover(t *testing.T) {
	f := func() (err error) {
		defer Recover(&err)
		panic("deferred recover")
	}
	err := f()
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "deferred recover" {
		t.Fatalf("got %v", err)
	}
	g := func() (err error) {
		defer Recover(&err)
		return errSentinel
	}
	if err := g(); err != errSentinel {
		t.Errorf("Recover changed a returned error to %v", err)
	}
}

func workerThatPanics() { panic("worker down") }

func TestGoContainsPanic(t *testing.T) {
	got := make(chan *PanicError, 1)
	Go(workerThatPanics, func(pe *PanicError) { got <- pe })
	select {
	case pe := <-got:
		if pe.Value != "worker down" {
			t.Errorf("Value = %v", pe.Value)
		}
		if !bytes.Contains(pe.Stack, []byte("guard.workerThatPanics")) {
			t.Errorf("stack lacks the panicking function:\n%s", pe.Stack)
		}
	case <-time.After(waitFor):
		t.Fatal("report was not called")
	}
	// Still here: the process survived the goroutine's panic.
}

func TestGoWithoutReportLogsToDefaultLogger(t *testing.T) {
	rec := newLogRecorder()
	prev := slog.Default()
	slog.SetDefault(slog.New(rec))
	t.Cleanup(func() { slog.SetDefault(prev) })

	Go(workerThatPanics, nil)
	r := rec.next(t)
	if r["level"] != "ERROR" || r["error"] != "panic: worker down" ||
		!strings.Contains(r["stack"], "guard.workerThatPanics") {
		t.Errorf("log record = %v", r)
	}
}

func TestGoRunsFunctionNormally(t *testing.T) {
	done := make(chan struct{})
	called := false
	Go(func() { close(done) }, func(*PanicError) { called = true })
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("f did not run")
	}
	if called {
		t.Error("report called without a panic")
	}
}

// logRecorder is a slog.Handler that keeps each record's attributes as
// strings, in order, and lets a test wait for them.
type logRecorder struct {
	c chan map[string]string
}

func newLogRecorder() *logRecorder { return &logRecorder{c: make(chan map[string]string, 1000)} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	l.c <- m
	return nil
}

// next waits for the next record.
func (l *logRecorder) next(t *testing.T) map[string]string {
	t.Helper()
	select {
	case m := <-l.c:
		return m
	case <-time.After(waitFor):
		t.Fatal("no log record within the deadline")
		return nil
	}
}

// none checks that no record is pending.
func (l *logRecorder) none(t *testing.T) {
	t.Helper()
	select {
	case m := <-l.c:
		t.Errorf("unexpected log record: %v", m)
	default:
	}
}
