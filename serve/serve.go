package serve

import (
	"context"
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
//  4. when ctx is done, the panic policy says so, or serving fails: sends
//     STOPPING=1, turns keep-alives off, stops accepting, lets every
//     connection it already accepted have its first request handled (see
//     below), and shuts srv down gracefully, waiting for in-flight requests
//     up to Options.ShutdownTimeout, then closes what is left.
//
// Under keel the listening socket is shared: a connection this process
// accepted a moment before its drain began was meant for it, and no other
// instance can answer it. net/http's Shutdown drops a request it reads
// once shutting down, without an answer, so Serve waits (up to
// newConnGrace) for each accepted connection's first request to reach the
// handler before it calls Shutdown.
//
// It returns:
//   - nil after a clean stop because ctx was done;
//   - an error wrapping ErrPanicked and the *guard.PanicError after a drain
//     under DrainAndExit;
//   - an error wrapping context.DeadlineExceeded, joined to the above, if
//     in-flight requests outlived ShutdownTimeout;
//   - the error from listening or serving otherwise.
//
// Serve modifies srv (Handler, BaseContext) and shuts it down; a server is
// served once. Serve never exits the process or handles signals; Run does
// the latter.
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
	pend := trackNew(srv)
	srv.Handler = pend.handler(guard.Middleware(logger)(h))

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

	// Answers from now on say Connection: close; idle connections close.
	srv.SetKeepAlivesEnabled(false)
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
	if n := pend.wait(sctx, min(newConnGrace, timeout)); n > 0 {
		logger.Warn("serve: connections accepted before the drain sent no request in time; closing them", "count", n, "grace", min(newConnGrace, timeout))
	}
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
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

// newConnGrace bounds how long a drain waits for a connection accepted
// before it to send its first request.
const newConnGrace = time.Second

// pending tracks the connections that were accepted but whose first
// request has not reached the handler yet. net/http calls the ConnState
// hook and the handler from each connection's goroutine, so a mutex
// guards the set.
type pending struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	changed chan struct{} // a token after each removal
}

type connKey struct{}

// trackNew chains srv's ConnState and ConnContext hooks to track new
// connections.
func trackNew(srv *http.Server) *pending {
	p := &pending{conns: map[net.Conn]struct{}{}, changed: make(chan struct{}, 1)}
	userState, userCtx := srv.ConnState, srv.ConnContext
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			p.mu.Lock()
			p.conns[c] = struct{}{}
			p.mu.Unlock()
		case http.StateClosed, http.StateHijacked:
			p.done(c)
		}
		if userState != nil {
			userState(c, st)
		}
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if userCtx != nil {
			ctx = userCtx(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, c)
	}
	return p
}

func (p *pending) done(c net.Conn) {
	p.mu.Lock()
	_, ok := p.conns[c]
	delete(p.conns, c)
	p.mu.Unlock()
	if ok {
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

// handler marks the request's connection as served before calling h.
func (p *pending) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			p.done(c)
		}
		h.ServeHTTP(w, r)
	})
}

// wait returns once no accepted connection waits for its first request,
// or after grace (or when ctx is done), with how many still wait.
func (p *pending) wait(ctx context.Context, grace time.Duration) int {
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-p.changed:
		case <-t.C:
			return n
		case <-ctx.Done():
			return n
		}
	}
}
