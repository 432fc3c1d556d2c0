package guard

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestScopeReportsFirstPanicOnceAndCancels(t *testing.T) {
	s := NewScope(context.Background())
	ctx := s.Context()
	secondSawCause := make(chan error, 1)

	s.Go(func(context.Context) error { panic("first") })
	s.Go(func(ctx context.Context) error {
		// Panic only after the first failure canceled the scope, so the
		// order of the two failures is known.
		<-ctx.Done()
		secondSawCause <- context.Cause(ctx)
		panic("second")
	})
	var ran atomic.Bool
	s.Go(func(ctx context.Context) error {
		<-ctx.Done()
		ran.Store(true)
		return nil
	})

	err := s.Wait()
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "first" {
		t.Fatalf("Wait() = %v, want the first panic", err)
	}
	if cause := <-secondSawCause; cause != err {
		t.Errorf("context.Cause seen by the scope = %v, want the first failure %v", cause, err)
	}
	if !ran.Load() {
		t.Error("a goroutine waiting on the scope's context was not released by the failure")
	}
	if got := s.Err(); got != err {
		t.Errorf("Err() = %v, want the same first failure", got)
	}
	if got := s.Wait(); got != err {
		t.Errorf("a second Wait() = %v, want the same first failure", got)
	}
	if ctx.Err() != context.Canceled || context.Cause(ctx) != err {
		t.Errorf("scope context: Err %v, Cause %v", ctx.Err(), context.Cause(ctx))
	}
}

func TestScopeReturnedErrorIsAFailure(t *testing.T) {
	s := NewScope(context.Background())
	s.Go(func(context.Context) error { return errSentinel })
	if err := s.Wait(); err != errSentinel {
		t.Fatalf("Wait() = %v, want the returned error unchanged", err)
	}
	if context.Cause(s.Context()) != errSentinel {
		t.Errorf("Cause = %v", context.Cause(s.Context()))
	}
}

func TestScopeSuccessLeavesContextAlive(t *testing.T) {
	s := NewScope(context.Background())
	var n atomic.Int32
	for range 10 {
		s.Go(func(ctx context.Context) error {
			// A goroutine of the scope may start more.
			s.Go(func(context.Context) error { n.Add(1); return nil })
			n.Add(1)
			return nil
		})
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("Wait() = %v", err)
	}
	if n.Load() != 20 {
		t.Errorf("%d goroutines ran, want 20", n.Load())
	}
	if s.Context().Err() != nil {
		t.Error("Wait canceled the scope's context; it must stay usable")
	}
	if s.Err() != nil {
		t.Errorf("Err() = %v", s.Err())
	}
}

func TestScopeFollowsParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	s := NewScope(parent)
	s.Go(func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	cancel()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Wait() = %v after parent cancel, want nil (not a failure)", err)
		}
	case <-time.After(waitFor):
		t.Fatal("scope goroutine not released by the parent's cancel")
	}
}

func TestScopeFromContext(t *testing.T) {
	if ScopeFrom(context.Background()) != nil {
		t.Error("ScopeFrom(Background) != nil")
	}
	s := NewScope(context.Background())
	ctx := WithScope(context.Background(), s)
	if ScopeFrom(ctx) != s {
		t.Error("ScopeFrom did not find the scope WithScope stored")
	}
}
