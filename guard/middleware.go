package guard

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// ErrResponseClosed is returned by the ResponseWriter that Middleware gives
// handlers when the response can no longer be written: the request has failed
// (a goroutine of its scope panicked, so the middleware will answer it), or
// its handler has returned.
var ErrResponseClosed = errors.New("guard: response closed: the request failed or its handler returned")

// Middleware returns HTTP middleware that contains panics to the request
// that caused them. For each request it:
//
//   - recovers a panic in the handler, and in any goroutine the handler
//     started through the request's scope (ScopeOf(w));
//   - answers that request 500, as application/problem+json or text/plain
//     according to its Accept header, if nothing was written yet; if the
//     response was already started it aborts the connection instead (as
//     net/http does for a panic), so the client sees a broken response rather
//     than a complete-looking truncated one, and nothing is written twice;
//   - logs one record at level Error per panic, with the method, the path,
//     the request id (X-Request-Id, or one generated; see RequestIDOf), the
//     outcome and the stack;
//   - calls the hooks installed with OnPanic on the request's context;
//   - leaves every other request alone.
//
// The handler gets the server's *http.Request unchanged: the request's
// state — its scope and id — lives in the ResponseWriter the handler gets,
// and ScopeOf, RequestIDOf and Request find it there, also through the
// writers of other middlewares that wrap it and have an Unwrap method (as
// http.ResponseController expects). Code that has only a context finds the
// state with ScopeFrom and RequestID in the context of the request that
// Request returns. Nothing is copied or allocated for this unless it is
// used; Middleware makes one allocation per request.
//
// A panic with http.ErrAbortHandler is not a failure: it aborts the
// connection without a log record, as net/http does, also when it comes from
// a goroutine of the request's scope while the handler runs.
//
// The request's scope is created on first use. Its context derives from the
// request's context as Middleware received it, carries the request's state
// (so ScopeFrom and RequestID work on it), and is canceled at the scope's
// first failure and when the handler returns; the request's own context is
// not canceled by the scope's failure, so a handler that waits for its
// goroutines should wait with Scope.Wait or watch Scope.Context().Done().
// Once a goroutine of the scope has panicked, writes to the response fail
// with ErrResponseClosed and the 500 is sent when the handler returns. A
// goroutine that panics after the handler returned is recovered and logged;
// the response is already complete then.
//
// The ResponseWriter given to the handler serializes Write, WriteHeader,
// Flush and ReadFrom, so the handler and its scope's goroutines may take
// turns writing; Header() returns the underlying map and is for the
// handler's goroutine. It supports http.ResponseController (Flush, Hijack,
// deadlines, full duplex) through Unwrap, and implements http.Flusher,
// http.Hijacker and io.ReaderFrom directly.
//
// If logger is nil, slog.Default() is used at the time of logging.
func Middleware(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return &handler{next: next, logger: logger}
	}
}

type handler struct {
	next   http.Handler
	logger *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &responseWriter{h: h, w: w, r: r}
	defer rw.finish()
	h.next.ServeHTTP(rw, r)
}

// responseWriter is both the http.ResponseWriter handed to the handler and
// the state of one request behind Middleware, so that a request costs one
// small allocation and no copy of the http.Request. The fields above mu are
// set before the handler runs and only read afterwards; those under mu are
// shared by the handler's goroutine, the scope's goroutines and whoever
// holds a context from Request. The writing methods hold mu while they
// write, so that the failure of the scope and the end of the handler see a
// settled response.
type responseWriter struct {
	h *handler
	w http.ResponseWriter // the server's writer
	r *http.Request       // the server's request, also the handler's

	mu       sync.Mutex
	written  bool           // the response was started (status, body, flush, hijack)
	hijacked bool           // the connection was hijacked
	sealed   bool           // the handler returned; nothing may be written
	aborted  bool           // http.ErrAbortHandler from the scope while the handler ran
	failure  *PanicError    // the request's first panic
	sc       *Scope         // created by scope() on first use
	ctx      requestContext // set up by contextLocked() on first use
	id       string         // the request id, resolved on first use
}

// requestContext is a context that carries a request's state: the parent of
// the request's scope, and the context of the request Request returns.
type requestContext struct {
	context.Context
	rw *responseWriter
}

type requestKey struct{}

func (c *requestContext) Value(key any) any {
	switch key.(type) {
	case scopeKey, requestKey:
		return c.rw
	}
	return c.Context.Value(key)
}

// stateOf returns the state of the request that w answers behind
// Middleware, following Unwrap through other middlewares' writers, or nil.
func stateOf(w http.ResponseWriter) *responseWriter {
	for {
		switch v := w.(type) {
		case *responseWriter:
			return v
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}

// ScopeOf returns the scope of the request that w answers behind Middleware,
// creating it on first use; every call for the same request returns the
// same scope. w may be the writer Middleware gave the handler or any writer
// that wraps it and returns it (directly or in turn) from an
// Unwrap() http.ResponseWriter method. ScopeOf returns nil if w is not such
// a writer: outside Middleware, or behind a wrapper without Unwrap.
//
// A panic in a goroutine started with the scope's Go answers the request
// 500 (see Middleware). ScopeOf is safe to call from any goroutine.
func ScopeOf(w http.ResponseWriter) *Scope {
	if rw := stateOf(w); rw != nil {
		return rw.scope()
	}
	return nil
}

// RequestIDOf returns the id of the request that w answers behind
// Middleware, as Middleware logs it: the client's X-Request-Id header when it
// is 1 to 128 visible ASCII characters, else 16 random hex digits generated
// on first use; every call for the same request returns the same id. w is
// found as by ScopeOf; RequestIDOf returns "" if w is not a request's behind
// Middleware. It is safe to call from any goroutine.
func RequestIDOf(w http.ResponseWriter) string {
	if rw := stateOf(w); rw != nil {
		return rw.requestID()
	}
	return ""
}

// Request returns r with a context that carries the state of the request
// that w answers behind Middleware, so that code given only r.Context(), or
// a context derived from it, finds the request's scope with ScopeFrom and its
// id with RequestID. The context keeps r.Context()'s values, deadline and
// cancellation. Call it in the handler (or a middleware inside Middleware)
// and pass the result on:
//
//	r = guard.Request(w, r)
//	orders, err := loadOrders(r.Context(), user) // may use guard.ScopeFrom(ctx)
//
// Request copies r, as r.WithContext does, unless r's context already
// carries the state, in which case it returns r itself; Middleware does not
// call it, so a request pays for the copy only where it is needed. w is
// found as by ScopeOf; if it is not a request's behind Middleware, Request
// returns r unchanged.
func Request(w http.ResponseWriter, r *http.Request) *http.Request {
	rw := stateOf(w)
	if rw == nil {
		return r
	}
	ctx := r.Context()
	if q, ok := ctx.Value(requestKey{}).(*responseWriter); ok && q == rw {
		return r
	}
	if r != rw.r {
		// A middleware inside Middleware may have changed the context.
		return r.WithContext(&requestContext{Context: ctx, rw: rw})
	}
	// r is the request Middleware saw, with its context: share the state's
	// context. (Comparing r rather than contexts: a context need not be
	// comparable.)
	rw.mu.Lock()
	c := rw.contextLocked()
	rw.mu.Unlock()
	return r.WithContext(c)
}

// contextLocked returns the context derived from the request's context as
// Middleware received it that carries the request's state, creating it on
// first use. rw.mu must be held.
func (rw *responseWriter) contextLocked() *requestContext {
	if rw.ctx.rw == nil {
		rw.ctx = requestContext{Context: rw.r.Context(), rw: rw}
	}
	return &rw.ctx
}

// scope returns the request's scope, creating it on first use.
func (rw *responseWriter) scope() *Scope {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.sc == nil {
		rw.sc = newScope(rw.contextLocked(), rw.scopePanicked)
		if rw.sealed {
			rw.sc.cancel(nil)
		}
	}
	return rw.sc
}

// closedLocked reports whether the response may no longer be written.
// rw.mu must be held.
func (rw *responseWriter) closedLocked() bool {
	return rw.sealed || rw.failure != nil || rw.aborted
}

// scopePanicked is called on a goroutine of the request's scope that
// panicked, before the scope's context is canceled.
func (rw *responseWriter) scopePanicked(pe *PanicError) {
	abort := errors.Is(pe, http.ErrAbortHandler)
	rw.mu.Lock()
	if abort {
		if !rw.sealed {
			rw.aborted = true // finish aborts the connection
		}
		rw.mu.Unlock()
		return
	}
	already, sealed := rw.failure != nil, rw.sealed
	if !already {
		rw.failure = pe
	}
	rw.mu.Unlock()
	switch {
	case already:
		rw.report(pe, "the request had already failed")
	case sealed:
		// The response is complete; only logging is left.
		rw.report(pe, "after the response: the handler had returned")
	default:
		// The handler runs: finish answers the request and logs.
	}
}

// finish runs, deferred, when the handler returns or panics. It seals the
// response, cancels the scope, and answers or aborts a failed request.
func (rw *responseWriter) finish() {
	v := recover()
	rw.mu.Lock()
	rw.sealed = true
	abort := rw.aborted
	var handlerPanic *PanicError
	if v != nil {
		pe := newPanicError(v)
		switch {
		case errors.Is(pe, http.ErrAbortHandler):
			abort = true
		case rw.failure == nil:
			rw.failure = pe
		case pe != rw.failure:
			handlerPanic = pe
		}
	}
	failure := rw.failure
	written, hijacked := rw.written, rw.hijacked
	sc := rw.sc
	rw.mu.Unlock()

	if sc != nil {
		sc.cancel(nil)
	}
	if failure == nil {
		if abort {
			panic(http.ErrAbortHandler)
		}
		return
	}

	switch {
	case hijacked:
		rw.report(failure, "the connection was hijacked; nothing answered")
	case written:
		rw.report(failure, "response already started; connection aborted")
		abort = true
	case abort:
		rw.report(failure, "connection aborted")
	default:
		writeProblem(rw.w, rw.r, http.StatusInternalServerError,
			"the server failed while handling this request", rw.requestID())
		rw.report(failure, "answered 500")
	}
	if handlerPanic != nil {
		rw.report(handlerPanic, "the request had already failed")
	}
	if abort && !hijacked {
		panic(http.ErrAbortHandler)
	}
}

// report logs one panic of the request and calls the OnPanic hooks.
func (rw *responseWriter) report(pe *PanicError, outcome string) {
	logger := rw.h.logger
	if logger == nil {
		logger = slog.Default()
	}
	ctx := rw.r.Context()
	logger.LogAttrs(ctx, slog.LevelError, "guard: panic serving request",
		slog.String("method", rw.r.Method),
		slog.String("path", rw.r.URL.Path),
		slog.String("request_id", rw.requestID()),
		slog.String("error", pe.Error()),
		slog.String("outcome", outcome),
		slog.String("stack", string(pe.Stack)),
	)
	if hook, ok := ctx.Value(hookKey{}).(panicHook); ok {
		hook(pe)
	}
}

// requestID returns the request's id, resolving it on first use: the
// client's X-Request-Id if it is usable, else a generated one.
func (rw *responseWriter) requestID() string {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.id == "" {
		// Handlers do not modify the request (net/http's rule), so its
		// header may be read from any goroutine.
		rw.id = rw.r.Header.Get("X-Request-Id")
		if !validRequestID(rw.id) {
			rw.id = newRequestID()
		}
	}
	return rw.id
}

// validRequestID accepts 1 to 128 visible ASCII characters, so an id from a
// client can go into logs and headers unchanged.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// newRequestID returns 16 random hex digits. Request ids name log records;
// they need not be unpredictable, so math/rand/v2's fast generator serves.
func newRequestID() string {
	s := strconv.FormatUint(rand.Uint64(), 16)
	const zeros = "0000000000000000"
	return zeros[len(s):] + s
}

// RequestID returns the id of the request whose state ctx carries, as
// RequestIDOf returns it: ctx is the context of a request from Request, the
// context of a request's scope (ScopeOf), or a context derived from either.
// It returns "" for any other context — including the context of the
// request a handler behind Middleware is given, which does not carry the
// state; use RequestIDOf(w) there, or Request.
func RequestID(ctx context.Context) string {
	if rw, ok := ctx.Value(requestKey{}).(*responseWriter); ok {
		return rw.requestID()
	}
	return ""
}

type hookKey struct{}

type panicHook func(*PanicError)

// OnPanic returns a copy of ctx that makes Middleware call fn for each panic
// it catches while serving a request whose context derives from ctx, after
// logging it (a panic with http.ErrAbortHandler is not reported). Hooks
// installed on a context that already has some are all called, innermost
// last. fn may be called from several goroutines at once and must not block.
//
// A server installs a hook for all its requests through
// http.Server.BaseContext; package serve does this to apply its panic policy.
func OnPanic(ctx context.Context, fn func(*PanicError)) context.Context {
	if prev, ok := ctx.Value(hookKey{}).(panicHook); ok {
		next := fn
		fn = func(pe *PanicError) {
			prev(pe)
			next(pe)
		}
	}
	return context.WithValue(ctx, hookKey{}, panicHook(fn))
}

// Header returns the server's writer's header map; it is for the handler's
// goroutine.
func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) Write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.closedLocked() {
		return 0, ErrResponseClosed
	}
	rw.written = true
	return rw.w.Write(p)
}

func (rw *responseWriter) WriteHeader(code int) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.closedLocked() {
		return
	}
	// An informational status other than 101 does not start the response.
	if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
		rw.written = true
	}
	rw.w.WriteHeader(code)
}

// FlushError flushes the response; http.ResponseController prefers it to
// Flush.
func (rw *responseWriter) FlushError() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.closedLocked() {
		return ErrResponseClosed
	}
	rw.written = true
	return http.NewResponseController(rw.w).Flush()
}

// Flush implements http.Flusher.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// Hijack implements http.Hijacker when the server's writer supports it.
func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.closedLocked() {
		return nil, nil, ErrResponseClosed
	}
	c, brw, err := http.NewResponseController(rw.w).Hijack()
	if err == nil {
		rw.written = true
		rw.hijacked = true
	}
	return c, brw, err
}

// ReadFrom lets io.Copy use the server's writer's ReadFrom (sendfile).
func (rw *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.closedLocked() {
		return 0, ErrResponseClosed
	}
	rw.written = true
	return io.Copy(rw.w, src)
}

// Unwrap returns the server's writer, for http.ResponseController.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }
