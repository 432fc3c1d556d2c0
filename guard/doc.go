// Package guard keeps a panic from taking a Go service down with it: it
// turns panics into errors, runs goroutines that cannot crash the process,
// groups goroutines in scopes (the Go form of Node's domain), and contains a
// panic in an HTTP handler, or in a goroutine the handler started, to the
// one request that caused it.
//
// In Go, one unrecovered panic in any goroutine ends the process and every
// request in it. net/http recovers a panic only on the handler's own
// goroutine, and then only drops the connection; a goroutine the handler
// starts is unprotected, and golang.org/x/sync/errgroup does not recover.
//
// # Panics as errors
//
// Run calls a function and returns its panic as a *PanicError, which holds
// the panic value and the stack and unwraps to the value when it is an
// error, so errors.Is and errors.As work on it. Recover does the same for
// the function that defers it. Go starts a goroutine whose panic is handed to
// a function instead of ending the process.
//
// # Scopes
//
// A Scope is a set of goroutines tied to a context. Each goroutine's panic
// is recovered; the first failure (a panic or a returned error) is recorded
// once, cancels the scope's context with the failure as its cause, and is
// what Wait returns.
//
// # HTTP
//
// Middleware contains a panic in a handler, or in a goroutine of the
// request's scope, to that request: it answers 500, as
// application/problem+json or text/plain by the Accept header, if nothing
// was written yet, and aborts the connection otherwise, so nothing is ever
// written twice; it logs the panic with log/slog as one record with the
// method, path, request id and stack; other requests carry on. A panic with
// http.ErrAbortHandler aborts the request silently, as net/http does.
// OnPanic lets a server hear of each panic (package serve uses it for its
// panic policy).
//
// Middleware hands the handler the server's *http.Request unchanged — it
// does not copy the request to change its context, which would cost more
// than everything else it does — and keeps the request's state in the
// ResponseWriter it hands the handler instead. So a handler reaches its
// request's scope and id through w:
//
//	s := guard.ScopeOf(w)      // the request's scope, made on first use
//	id := guard.RequestIDOf(w) // X-Request-Id, or a generated id
//
// These follow Unwrap() http.ResponseWriter through the writers of other
// middlewares between Middleware and the handler (the convention
// http.ResponseController relies on), and return nil and "" outside
// Middleware or behind a wrapper without Unwrap.
//
// Code that is given only a context finds the same scope and id with
// ScopeFrom and RequestID, on the context of a request from Request (which
// copies the request once to add the state, only where it is called) or on
// the context of the request's scope:
//
//	r = guard.Request(w, r)
//	loadOrders(r.Context()) // may call guard.ScopeFrom(ctx), guard.RequestID(ctx)
//
// On the context of the request a handler is given, without Request,
// ScopeFrom returns nil and RequestID "".
//
// # Strict input
//
// ReadJSON and DecodeJSON decode a request body with a size limit, refusing
// unknown fields and trailing data, and turn every kind of bad input into a
// 400 with a message that says what is wrong — never a panic or a 500.
// WriteError writes such an answer in the client's preferred format.
package guard
