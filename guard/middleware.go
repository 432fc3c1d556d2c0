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
//     started through the request's scope (ScopeFrom(r.Context()));
//   - answers that request 500, as application/problem+json or text/plain
//     according to its Accept header, if nothing was written yet; if the
//     response was already started it aborts the connection instead (as
//     net/http does for a panic), so the client sees a broken response rather
//     than a complete-looking truncated one, and nothing is written twice;
//   - logs one record at level Error per panic, with the method, the path,
//     the request id (X-Request-Id, or one generated; see RequestID), the
//     outcome and the stack;
//   - calls the hooks installed with OnPanic on the request's context;
//   - leaves every other request alone.
//
// A panic with http.ErrAbortHandler is not a failure: it aborts the
// connection without a log record, as net/http does, also when it comes from
// a goroutine of the request's scope while the handler runs.
//
// The request's scope is created on first use. Its context is canceled at
// its first failure and when the handler returns; the handler's own
// r.Context() is not canceled by the scope's failure, so a handler that waits
// for its goroutines should wait with Scope.Wait or watch
// Scope.Context().Done(). Once a goroutine of the scope has panicked,
// writes to the response fail with ErrResponseClosed and the 500 is sent
// when the handler returns. A goroutine that panics after the handler
// returned is recovered and logged; the response is already complete then.
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
	q := &request{h: h, w: w}
	q.ctx.Context = r.Context()
	q.ctx.req = q
	q.rw.req = q
	// WithContext is inlined and its copy does not escape, so the handler's
	// request lives in q: one allocation per request in all.
	q.req = *r.WithContext(&q.ctx)
	defer q.finish()
	h.next.ServeHTTP(&q.rw, &q.req)
}

// request is the state of one request behind Middleware. The fields above
// mu are set before the handler runs and only read afterwards; those under
// mu are shared by the handler's goroutine, the scope's goroutines and the
// response writer.
type request struct {
	req http.Request // handed to the handler: the server's request with ctx
	h   *handler
	w   http.ResponseWriter // the server's writer
	ctx requestContext      // handed to the handler; its Context is the server's
	rw  responseWriter      // handed to the handler

	mu       sync.Mutex
	written  bool        // the response was started (status, body, flush, hijack)
	hijacked bool        // the connection was hijacked
	sealed   bool        // the handler returned; nothing may be written
	aborted  bool        // http.ErrAbortHandler from the scope while the handler ran
	failure  *PanicError // the request's first panic
	sc       *Scope      // created by scope() on first use
	id       string      // the request id, resolved on first use
}

// requestContext is the context a handler sees: the request's context plus
// the request's state, in the same allocation as the state.
type requestContext struct {
	context.Context
	req *request
}

type requestKey struct{}

func (c *requestContext) Value(key any) any {
	switch key.(type) {
	case scopeKey, requestKey:
		return c.req
	}
	return c.Context.Value(key)
}

// scope returns the request's scope, creating it on first use.
func (q *request) scope() *Scope {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sc == nil {
		q.sc = newScope(&q.ctx, q.scopePanicked)
		if q.sealed {
			q.sc.cancel(nil)
		}
	}
	return q.sc
}

// closedLocked reports whether the response may no longer be written.
// q.mu must be held.
func (q *request) closedLocked() bool {
	return q.sealed || q.failure != nil || q.aborted
}

// scopePanicked is called on a goroutine of the request's scope that
// panicked, before the scope's context is canceled.
func (q *request) scopePanicked(pe *PanicError) {
	abort := errors.Is(pe, http.ErrAbortHandler)
	q.mu.Lock()
	if abort {
		if !q.sealed {
			q.aborted = true // finish aborts the connection
		}
		q.mu.Unlock()
		return
	}
	already, sealed := q.failure != nil, q.sealed
	if !already {
		q.failure = pe
	}
	q.mu.Unlock()
	switch {
	case already:
		q.report(pe, "the request had already failed")
	case sealed:
		// The response is complete; only logging is left.
		q.report(pe, "after the response: the handler had returned")
	default:
		// The handler runs: finish answers the request and logs.
	}
}

// finish runs, deferred, when the handler returns or panics. It seals the
// response, cancels the scope, and answers or aborts a failed request.
func (q *request) finish() {
	v := recover()
	q.mu.Lock()
	q.sealed = true
	abort := q.aborted
	var handlerPanic *PanicError
	if v != nil {
		pe := newPanicError(v)
		switch {
		case errors.Is(pe, http.ErrAbortHandler):
			abort = true
		case q.failure == nil:
			q.failure = pe
		case pe != q.failure:
			handlerPanic = pe
		}
	}
	failure := q.failure
	written, hijacked := q.written, q.hijacked
	sc := q.sc
	q.mu.Unlock()

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
		q.report(failure, "the connection was hijacked; nothing answered")
	case written:
		q.report(failure, "response already started; connection aborted")
		abort = true
	case abort:
		q.report(failure, "connection aborted")
	default:
		writeProblem(q.w, &q.req, http.StatusInternalServerError,
			"the server failed while handling this request", q.requestID())
		q.report(failure, "answered 500")
	}
	if handlerPanic != nil {
		q.report(handlerPanic, "the request had already failed")
	}
	if abort && !hijacked {
		panic(http.ErrAbortHandler)
	}
}

// report logs one panic of the request and calls the OnPanic hooks.
func (q *request) report(pe *PanicError, outcome string) {
	logger := q.h.logger
	if logger == nil {
		logger = slog.Default()
	}
	ctx := q.ctx.Context
	logger.LogAttrs(ctx, slog.LevelError, "guard: panic serving request",
		slog.String("method", q.req.Method),
		slog.String("path", q.req.URL.Path),
		slog.String("request_id", q.requestID()),
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
func (q *request) requestID() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.id == "" {
		// Handlers do not modify the request (net/http's rule), so its
		// header may be read from any goroutine.
		q.id = q.req.Header.Get("X-Request-Id")
		if !validRequestID(q.id) {
			q.id = newRequestID()
		}
	}
	return q.id
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

// RequestID returns the id of the request whose context ctx is (or derives
// from), as Middleware logs it: the client's X-Request-Id header when it is 1
// to 128 visible ASCII characters, else 16 random hex digits generated on
// first use. It returns "" if ctx is not a request's behind Middleware.
func RequestID(ctx context.Context) string {
	if q, ok := ctx.Value(requestKey{}).(*request); ok {
		return q.requestID()
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

// responseWriter is the http.ResponseWriter handed to the handler. Its
// writing methods hold the request's mutex while they write, so that the
// failure of the scope and the end of the handler see a settled response.
type responseWriter struct {
	req *request
}

func (w *responseWriter) Header() http.Header { return w.req.w.Header() }

func (w *responseWriter) Write(p []byte) (int, error) {
	q := w.req
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closedLocked() {
		return 0, ErrResponseClosed
	}
	q.written = true
	return q.w.Write(p)
}

func (w *responseWriter) WriteHeader(code int) {
	q := w.req
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closedLocked() {
		return
	}
	// An informational status other than 101 does not start the response.
	if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
		q.written = true
	}
	q.w.WriteHeader(code)
}

// FlushError flushes the response; http.ResponseController prefers it to
// Flush.
func (w *responseWriter) FlushError() error {
	q := w.req
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closedLocked() {
		return ErrResponseClosed
	}
	q.written = true
	return http.NewResponseController(q.w).Flush()
}

// Flush implements http.Flusher.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// Hijack implements http.Hijacker when the server's writer supports it.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	q := w.req
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closedLocked() {
		return nil, nil, ErrResponseClosed
	}
	c, rw, err := http.NewResponseController(q.w).Hijack()
	if err == nil {
		q.written = true
		q.hijacked = true
	}
	return c, rw, err
}

// ReadFrom lets io.Copy use the server's writer's ReadFrom (sendfile).
func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	q := w.req
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closedLocked() {
		return 0, ErrResponseClosed
	}
	q.written = true
	return io.Copy(q.w, src)
}

// Unwrap returns the server's writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.req.w }
