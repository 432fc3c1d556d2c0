package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keel-run/keel/guard"
)

// PanicPolicy is what Serve does after Middleware recovered a panic in a
// request (in a handler or in a goroutine of the request's scope). Either
// way that request is answered 500 and the panic is logged.
type PanicPolicy int

const (
	// KeepServing carries on: the panic was contained to its request.
	KeepServing PanicPolicy = iota
	// DrainAndExit treats a panic as a sign that the process's state may be
	// corrupt: Serve stops accepting, lets in-flight requests finish, and
	// returns an error wrapping ErrPanicked, so that main exits non-zero and
	// keel starts a clean instance while the others serve.
	DrainAndExit
)

func (p PanicPolicy) String() string {
	switch p {
	case KeepServing:
		return "keep-serving"
	case DrainAndExit:
		return "drain-and-exit"
	}
	return fmt.Sprintf("PanicPolicy(%d)", int(p))
}

// ErrPanicked is wrapped by the error Serve returns after draining under
// DrainAndExit; the same error also wraps the *guard.PanicError.
var ErrPanicked = errors.New("serve: stopped after a panic")

// DefaultShutdownTimeout bounds the graceful drain when
// Options.ShutdownTimeout is zero: a second less than keel's default
// kill_timeout (5s), so the drain ends before keel's SIGKILL would.
const DefaultShutdownTimeout = 4 * time.Second

// Options says how Serve runs a server. The zero value serves the sockets
// keel passed, or srv.Addr without keel, and keeps serving after a panic.
type Options struct {
	// Addr is the TCP address to listen on when the process was given no
	// sockets (LISTEN_FDS unset, or meant for another pid). Empty means
	// srv.Addr; if both are empty and there are no sockets, Serve fails.
	Addr string
	// Names selects inherited sockets by their LISTEN_FDNAMES name. Empty
	// means every inherited socket; the others are closed.
	Names []string
	// ShutdownTimeout bounds the graceful drain: after it, remaining
	// connections are closed and Serve reports it. Zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// OnPanic is the panic policy.
	OnPanic PanicPolicy
	// Logger gets Serve's records and Middleware's panic records. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Serve runs srv the keel way until ctx is done, srv fails, or — under
// DrainAndExit — a request panics. In order, it:
//
//  1. takes its listeners from socket activation (see Listeners), or listens
//     on Options.Addr (else srv.Addr) when the process was given none;
//  2. wraps srv.Handler (http.DefaultServeMux if nil) in guard.Middleware,
//     and srv.BaseContext so that the middleware reports panics to Serve;
//     requests' contexts derive from ctx's values but not its cancellation
//     (or from srv.BaseContext's result, if it is set), so in-flight requests
//     are not canceled by the stop;
//  3. serves on every listener (TLS with srv.TLSConfig if it is set) and
//     sends READY=1 with a STATUS= line naming the addresses (see Notify);
//  4. when ctx is done, the panic policy says so, or serving fails, drains
//     (below) and returns.
//
// The drain, in order:
//
//  1. from now on every answer says Connection: close (set before srv's
//     handler runs, so the handler sees it and may change it): net/http
//     closes an HTTP/1 connection after such an answer, and HTTP/2 sends
//     GOAWAY; sends STOPPING=1;
//  2. stops accepting: closes its listeners and waits for the accept loops
//     to end, so every connection it took is known;
//  3. closes each HTTP/1 connection once it has stayed idle for a grace of
//     one second (or ShutdownTimeout, if shorter), and waits until no
//     HTTP/1 connection is left. Idle means it has not sent its first
//     request yet, or is between requests; the grace runs from the start of
//     the drain, or from when the connection last became idle during it;
//  4. calls srv.Shutdown, which runs the functions registered with
//     srv.RegisterOnShutdown (so HTTP/2 connections get GOAWAY) and waits
//     for the HTTP/2 connections to finish.
//
// The steps share one deadline, ShutdownTimeout from the start of the
// drain. At it, Serve calls srv.Shutdown (if step 4 has not begun) and
// srv.Close, closing every connection left.
//
// Under keel the listening socket is shared, and a client may reuse a
// keep-alive connection at any moment: a request already on its way to
// this process can be answered by no one else. So the drain never closes
// a connection that may have a request on its way except after the grace
// — net/http's SetKeepAlivesEnabled(false) and Shutdown close idle
// connections at once, failing such a request (and Shutdown drops, without
// an answer, a first request it reads once shutting down), which is why
// Serve calls Shutdown only when no HTTP/1 connection is left. A request
// that reaches the server within the grace is answered, with Connection:
// close; that includes the first request of a connection accepted just
// before the drain began. A connection is idle until net/http has read a
// whole request header, so a client that takes longer than the grace to
// send one loses it. An idle HTTP/2 connection over TLS is recognised when
// its grace ends and left open for Shutdown's GOAWAY; unencrypted HTTP/2
// (http.Protocols) is closed after the grace like HTTP/1. Hijacked
// connections are not waited for, as with net/http's Shutdown.
//
// It returns:
//   - nil after a clean stop because ctx was done (also when connections
//     that were idle at the deadline had to be closed);
//   - an error wrapping ErrPanicked and the *guard.PanicError after a drain
//     under DrainAndExit;
//   - an error wrapping context.DeadlineExceeded, joined to the above, if a
//     request was still in progress at the deadline;
//   - the error from listening or serving otherwise.
//
// Serve modifies srv (Handler, BaseContext, ConnState; each wraps or calls
// the one set) and shuts it down; a server is served once. Serve never
// exits the process or handles signals; Run does the latter.
func Serve(ctx context.Context, srv *http.Server, opts Options) error {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	timeout := opts.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	lns, inherited, err := listen(srv, opts)
	if err != nil {
		return err
	}

	// Panics reach this goroutine through the request contexts' hook.
	var panics chan *guard.PanicError
	if opts.OnPanic == DrainAndExit {
		panics = make(chan *guard.PanicError, 1)
	}
	base := srv.BaseContext
	srv.BaseContext = func(ln net.Listener) context.Context {
		var c context.Context
		if base != nil {
			c = base(ln)
		} else {
			c = context.WithoutCancel(ctx)
		}
		if panics == nil {
			return c
		}
		return guard.OnPanic(c, func(pe *guard.PanicError) {
			select {
			case panics <- pe:
			default: // a drain is already on its way
			}
		})
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	cs := trackConns(srv)
	srv.Handler = cs.handler(guard.Middleware(logger)(h))

	serveErrs := make(chan error, len(lns))
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
		go func() {
			if srv.TLSConfig != nil {
				serveErrs <- srv.ServeTLS(ln, "", "")
			} else {
				serveErrs <- srv.Serve(ln)
			}
		}()
	}
	status := "serving on " + strings.Join(addrs, ", ")
	logger.Info("serve: serving", "addrs", addrs, "inherited", inherited, "panic_policy", opts.OnPanic.String())
	if err := Notify("READY=1\nSTATUS=" + status); err != nil {
		logger.Error("serve: could not report readiness", "error", err)
	}

	var result error
	running := len(lns)
	select {
	case <-ctx.Done():
		logger.Info("serve: stopping", "cause", context.Cause(ctx))
	case pe := <-panics:
		result = fmt.Errorf("%w: %w", ErrPanicked, pe)
		logger.Error("serve: a request panicked; draining so that a clean process replaces this one",
			"error", pe.Error())
	case err := <-serveErrs:
		running--
		result = fmt.Errorf("serve: serving: %w", err)
		logger.Error("serve: serving failed; stopping", "error", err)
	}

	// Not srv.SetKeepAlivesEnabled(false) nor srv.Shutdown yet: both close
	// idle keep-alive connections at once, failing a request a client has
	// already sent on one. Answers say Connection: close instead.
	cs.beginDrain()
	if err := Notify("STOPPING=1\nSTATUS=draining"); err != nil {
		logger.Error("serve: could not report stopping", "error", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	// Stop accepting (the socket stays open in keel for the other
	// instances), and wait for the accept loops to end, so that every
	// connection this process took is known.
	for _, ln := range lns {
		ln.Close()
	}
	for range running {
		if err := <-serveErrs; err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) && result == nil {
			result = fmt.Errorf("serve: serving: %w", err)
		}
	}
	grace := min(idleGrace, timeout)
	closed, busy, err := cs.drain(sctx, grace)
	if closed > 0 {
		logger.Info("serve: closed connections idle through the grace", "count", closed, "grace", grace)
	}
	if err == nil {
		// Only HTTP/2 connections may be left: Shutdown sends them GOAWAY,
		// runs srv's RegisterOnShutdown functions, and waits for them.
		err = srv.Shutdown(sctx)
	} else {
		srv.Shutdown(sctx) // runs the RegisterOnShutdown functions; returns at once
		if busy == 0 {
			err = nil // only idle connections were left
		}
	}
	if sctx.Err() != nil {
		srv.Close()
	}
	if err != nil {
		err = fmt.Errorf("serve: in-flight requests did not finish within %s; closed their connections: %w", timeout, err)
		logger.Error(err.Error())
		result = errors.Join(result, err)
	}
	logger.Info("serve: stopped")
	return result
}

// listen returns the listeners to serve on, and whether they were inherited.
func listen(srv *http.Server, opts Options) ([]net.Listener, bool, error) {
	inherited, err := Listeners()
	if err != nil {
		return nil, false, err
	}
	if len(inherited) > 0 {
		var lns []net.Listener
		for _, l := range inherited {
			if len(opts.Names) == 0 || slices.Contains(opts.Names, l.Name) {
				lns = append(lns, l.Listener)
			} else {
				l.Close()
			}
		}
		if len(lns) == 0 {
			return nil, false, fmt.Errorf("serve: none of the %d inherited sockets is named %q; check LISTEN_FDNAMES or Options.Names",
				len(inherited), opts.Names)
		}
		return lns, true, nil
	}
	addr := opts.Addr
	if addr == "" {
		addr = srv.Addr
	}
	if addr == "" {
		return nil, false, errors.New("serve: no socket to serve on: not started by keel (LISTEN_FDS unset) and no address; set Options.Addr or http.Server.Addr")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("serve: %w", err)
	}
	return []net.Listener{ln}, false, nil
}

// Run is Serve for main: it serves until the process gets SIGTERM (keel's
// and systemd's stop signal) or SIGINT (Ctrl-C), then drains. After the
// first signal the default action is restored, so a second one ends the
// process at once. Run returns what Serve returns; main should exit non-zero
// on an error:
//
//	if err := serve.Run(srv, serve.Options{OnPanic: serve.DrainAndExit}); err != nil {
//		slog.Error("server stopped", "error", err)
//		os.Exit(1)
//	}
func Run(srv *http.Server, opts Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	unregister := context.AfterFunc(ctx, stop)
	defer unregister()
	return Serve(ctx, srv, opts)
}

// idleGrace is how long a drain leaves an HTTP/1 connection idle — not
// sent its first request yet, or between requests — before it closes it: a
// request the client has already sent arrives within it and is answered
// instead of reset.
const idleGrace = time.Second

// drainSweep is how long a drain waits before it looks for connections to
// close again when none is due sooner.
const drainSweep = 50 * time.Millisecond

// conns tracks srv's connections through its ConnState hook, so that a
// drain knows which are idle and since when. net/http calls the hook from
// each connection's goroutine (HTTP/2 from its serving goroutine), so mu
// guards the set; the handler reads draining without it.
type conns struct {
	draining atomic.Bool // set when the drain begins

	mu    sync.Mutex // guards the fields below; the hook holds it briefly
	all   map[net.Conn]connInfo
	http1 int           // connections in all not known to be HTTP/2
	start time.Time     // when the drain began; zero before
	gone  chan struct{} // a token when, draining, http1 drops to 0
}

type connInfo struct {
	state     http.ConnState // StateNew, StateActive or StateIdle
	idleSince time.Time      // once draining: when it last became idle, or the drain's start
	http2     bool           // HTTP/2 over TLS: Shutdown's GOAWAY drains it
	closing   bool           // closed by the drain; StateClosed not seen yet
}

// trackConns chains srv's ConnState hook (ours first, then the one set) to
// a new conns.
func trackConns(srv *http.Server) *conns {
	cs := &conns{all: map[net.Conn]connInfo{}, gone: make(chan struct{}, 1)}
	user := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		cs.track(c, st)
		if user != nil {
			user(c, st)
		}
	}
	return cs
}

func (cs *conns) track(c net.Conn, st http.ConnState) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch st {
	case http.StateNew:
		ci := connInfo{state: st}
		if !cs.start.IsZero() { // accepted after the drain began, before the listener closed
			ci.idleSince = time.Now()
		}
		cs.all[c] = ci
		cs.http1++
	case http.StateActive, http.StateIdle:
		ci, ok := cs.all[c]
		if !ok {
			return
		}
		ci.state = st
		if st == http.StateIdle && !cs.start.IsZero() {
			ci.idleSince = time.Now()
		}
		cs.all[c] = ci
	case http.StateHijacked, http.StateClosed:
		ci, ok := cs.all[c]
		if !ok {
			return
		}
		delete(cs.all, c)
		if !ci.http2 {
			cs.http1--
			cs.signalGoneLocked()
		}
	}
}

// signalGoneLocked wakes the drain if no HTTP/1 connection is left. cs.mu
// must be held.
func (cs *conns) signalGoneLocked() {
	if cs.http1 == 0 && !cs.start.IsZero() {
		select {
		case cs.gone <- struct{}{}:
		default:
		}
	}
}

// handler makes every answer given once the drain has begun say
// Connection: close, before h runs (so h sees the header and may change
// it). net/http closes an HTTP/1 connection after such an answer; HTTP/2
// sends GOAWAY.
func (cs *conns) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cs.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// beginDrain starts every idle connection's grace now.
func (cs *conns) beginDrain() {
	cs.draining.Store(true)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.start = time.Now()
	for c, ci := range cs.all {
		ci.idleSince = cs.start
		cs.all[c] = ci
	}
}

// drain closes each HTTP/1 connection once it has stayed idle (StateNew or
// StateIdle) for grace, and returns once none is left, with how many it
// closed and a nil error. If ctx is done first it also returns how many
// connections had a request in progress then, and ctx's error, leaving every
// connection still open to the caller. beginDrain must have been called.
func (cs *conns) drain(ctx context.Context, grace time.Duration) (closed, busy int, err error) {
	timer := time.NewTimer(drainSweep)
	defer timer.Stop()
	for {
		due, next, done := cs.due(grace)
		if done {
			return closed, 0, nil
		}
		for _, d := range due {
			// Only an idle connection has certainly finished its TLS
			// handshake, so only then can ConnectionState not block.
			if tc, ok := d.c.(*tls.Conn); ok && d.state == http.StateIdle && tc.ConnectionState().NegotiatedProtocol == "h2" {
				cs.markHTTP2(d.c)
				continue
			}
			d.c.Close()
			closed++
		}
		timer.Reset(next) // since Go 1.23, Reset drops a tick not yet received
		select {
		case <-cs.gone:
		case <-timer.C:
		case <-ctx.Done():
			return closed, cs.busy(), ctx.Err()
		}
	}
}

type dueConn struct {
	c     net.Conn
	state http.ConnState
}

// due marks the HTTP/1 connections idle for grace as closing and returns
// them, with how long until the next one is due (at most drainSweep), or
// reports that no HTTP/1 connection is left.
func (cs *conns) due(grace time.Duration) (due []dueConn, next time.Duration, done bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.http1 == 0 {
		return nil, 0, true
	}
	now := time.Now()
	next = drainSweep
	for c, ci := range cs.all {
		if ci.http2 || ci.closing || ci.state == http.StateActive {
			continue
		}
		if left := ci.idleSince.Add(grace).Sub(now); left > 0 {
			next = min(next, left)
			continue
		}
		ci.closing = true
		cs.all[c] = ci
		due = append(due, dueConn{c, ci.state})
	}
	return due, next, false
}

// markHTTP2 leaves c to Shutdown, which drains HTTP/2 with GOAWAY.
func (cs *conns) markHTTP2(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	ci, ok := cs.all[c]
	if !ok || ci.http2 {
		return
	}
	ci.http2, ci.closing = true, false
	cs.all[c] = ci
	cs.http1--
	cs.signalGoneLocked()
}

// busy counts the connections with a request in progress.
func (cs *conns) busy() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := 0
	for _, ci := range cs.all {
		if ci.state == http.StateActive {
			n++
		}
	}
	return n
}
