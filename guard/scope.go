package guard

import (
	"context"
	"sync"
)

// A Scope is a group of goroutines tied to a context: the Go form of Node's
// domain. Every goroutine started with Go has its panic recovered; the first
// failure — a panic, as a *PanicError, or a non-nil error returned — is
// recorded once, cancels the scope's context with that failure as its cause
// (see context.Cause), and is what Wait and Err return. Later failures are
// discarded, as golang.org/x/sync/errgroup does.
//
// A Scope must be created with NewScope (or, for a request, comes from
// Middleware through ScopeOf). Its methods are safe to call from any
// goroutine.
type Scope struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	// onPanic, if set, is called for every panic a goroutine of the scope
	// recovers, not only the first, before the context is canceled.
	// Middleware uses it to answer the request and log. Set at construction.
	onPanic func(*PanicError)

	mu  sync.Mutex // guards err
	err error      // the first failure
}

// NewScope returns a scope whose context is derived from parent. The scope's
// context ends at the scope's first failure or when parent ends, whichever
// comes first; like any derived context, it holds a reference in parent
// until then, so derive scopes from a context that ends (a request's, a
// job's, the server's).
func NewScope(parent context.Context) *Scope {
	return newScope(parent, nil)
}

func newScope(parent context.Context, onPanic func(*PanicError)) *Scope {
	ctx, cancel := context.WithCancelCause(parent)
	return &Scope{ctx: ctx, cancel: cancel, onPanic: onPanic}
}

// Context returns the scope's context, which is canceled at the first
// failure (with the failure as its context.Cause) or when the parent ends.
func (s *Scope) Context() context.Context { return s.ctx }

// Go starts f in a new goroutine of the scope, passing it the scope's
// context. If f panics, the panic is recovered; a panic or a non-nil error
// from f is a failure of the scope. Go may be called at any time, also from
// the scope's own goroutines and after a failure (f then starts with a
// canceled context), but a call that starts a goroutine after Wait has begun
// waiting must come from a goroutine of the scope, as with sync.WaitGroup.
func (s *Scope) Go(f func(ctx context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.run(f)
		if err != nil {
			s.fail(err)
		}
	}()
}

func (s *Scope) run(f func(ctx context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := newPanicError(v)
			if s.onPanic != nil {
				s.onPanic(pe)
			}
			err = pe
		}
	}()
	return f(s.ctx)
}

// fail records err if it is the scope's first failure, and cancels the
// context with it.
func (s *Scope) fail(err error) {
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
	}
	s.mu.Unlock()
	if first {
		s.cancel(err)
	}
}

// Wait blocks until every goroutine started with Go has returned, then
// returns the scope's first failure, or nil if there was none. Wait does not
// cancel the scope's context, so a request's scope can be waited on and the
// request's context still used afterwards.
func (s *Scope) Wait() error {
	s.wg.Wait()
	return s.Err()
}

// Err returns the scope's first failure so far, or nil, without waiting.
func (s *Scope) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// scopeKey is the context key under which a *Scope, or the state of a
// request behind Middleware (which makes the request's scope on demand), is
// stored.
type scopeKey struct{}

// WithScope returns a copy of ctx that carries s, for ScopeFrom to find.
func WithScope(ctx context.Context, s *Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

// ScopeFrom returns the scope ctx carries: the one put there with WithScope,
// or the request's scope (made on first use, the same as ScopeOf's) when ctx
// is the context of a request from Request, the context of a request's
// scope, or a context derived from either. It returns nil if ctx carries
// none — also for the context of the request a handler behind Middleware is
// given, which does not carry the request's state; use ScopeOf(w) there, or
// Request.
func ScopeFrom(ctx context.Context) *Scope {
	switch v := ctx.Value(scopeKey{}).(type) {
	case *Scope:
		return v
	case *responseWriter:
		return v.scope()
	}
	return nil
}
