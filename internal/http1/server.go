package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is what Serve returns once Shutdown or Close was called.
var ErrServerClosed = errors.New("http1: server closed")

// ErrAbortHandler, as the value of a handler's panic, ends the request
// without an answer and without a log record: the connection is closed.
// Any other panic is logged with its stack, and also closes the
// connection.
var ErrAbortHandler = errors.New("http1: abort handler")

// newConnGrace is how long a connection that has sent nothing yet is
// given, once the server shuts down, to send its first request.
const newConnGrace = time.Second

// lingerFor bounds how long a refused request's connection is read and
// discarded after the refusal, so that the client reads the refusal
// rather than a reset.
const lingerFor = 500 * time.Millisecond

// A Handler answers one request by filling w; the server writes the
// answer when it returns. r.Body holds the whole body. A Handler may read
// r but must not keep it, or w, after it returns.
type Handler func(w *ResponseWriter, r *Request)

// Server serves HTTP/1.1 on the listeners given to Serve. Set its fields
// before the first Serve; Serve, Shutdown and Close are safe to call
// concurrently.
type Server struct {
	// Handler answers every request. It must be set.
	Handler Handler
	// ConnContext, if set, returns the context of every request on the
	// connection c, derived from ctx; it is called once, when c is
	// accepted.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// OnRequestError, if set, writes the answer to a request the server
	// refuses before it reaches Handler (a *RequestError); otherwise it is
	// answered in plain text. Either way the connection is then closed.
	OnRequestError func(w *ResponseWriter, e *RequestError)
	// ReadHeaderTimeout bounds the wait for a new connection's first
	// request, and the reading of every request's line and header fields.
	// Zero means no limit.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included,
	// from its first byte. Zero means no limit.
	ReadTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection. Zero means no limit.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and header fields
	// (DefaultMaxHeaderBytes if 0): beyond, 431.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request's body (DefaultMaxBodyBytes if 0):
	// beyond, 413.
	MaxBodyBytes int64
	// Logger gets handler panics (Error), accept failures (Warn) and
	// refused requests (Debug). Nil discards.
	Logger *slog.Logger

	serving sync.WaitGroup // one per running Serve
	// readers holds the bufio.Readers of closed connections for new ones:
	// the control socket gets one connection per request, and 4 KB of
	// fresh heap for each would grow the daemon's RSS between GCs.
	readers sync.Pool

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]bool
	conns     map[*conn]connState
	shutting  bool
	quit      chan struct{} // closed when shutting starts
	drained   chan struct{} // closed when shutting and no connection is left
	isDrained bool
}

type connState int

const (
	stateNew    connState = iota // accepted, no request yet
	stateActive                  // a request is being read or answered
	stateIdle                    // kept alive, waiting for the next request
)

type conn struct {
	rwc net.Conn
}

func (s *Server) initLocked() {
	if s.conns == nil {
		s.listeners = map[net.Listener]bool{}
		s.conns = map[*conn]connState{}
		s.quit = make(chan struct{})
		s.drained = make(chan struct{})
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Shutdown or Close, then returns ErrServerClosed. It returns any
// other error of ln.Accept that is not temporary (those are retried after
// a pause), wrapped. It closes ln before it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.initLocked()
	if s.shutting {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = true
	s.serving.Add(1)
	quit := s.quit
	s.mu.Unlock()
	defer s.serving.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var pause time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			select {
			case <-quit:
				return ErrServerClosed
			default:
			}
			var te interface{ Temporary() bool }
			if !errors.As(err, &te) || !te.Temporary() {
				return fmt.Errorf("accepting a connection: %w", err)
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.logger().Warn("accepting a connection failed; retrying", "err", err, "in", pause)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-quit:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		pause = 0
		c := &conn{rwc: rwc}
		s.mu.Lock()
		s.conns[c] = stateNew
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown shuts the server down gracefully: it closes the listeners,
// closes idle connections, lets the requests in flight be answered (each
// connection closing after its answer) and gives connections that have
// sent nothing yet a moment to send their request. It returns nil once
// every connection is closed, or ctx.Err() if ctx is done first, when the
// caller may Close. Serve returns ErrServerClosed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdownLocked()
	s.mu.Unlock()
	s.serving.Wait() // no connection is added after this

	s.mu.Lock()
	for c, st := range s.conns {
		switch st {
		case stateIdle:
			c.rwc.Close()
		case stateNew:
			c.rwc.SetReadDeadline(time.Now().Add(newConnGrace))
		}
	}
	s.drainedLocked()
	drained := s.drained
	s.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once. Handlers still
// running see their request's context cancelled (unless their client had
// already sent its next request); Close does not wait for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdownLocked()
	s.mu.Unlock()
	s.serving.Wait()
	s.mu.Lock()
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	return nil
}

// shutdownLocked starts the shutdown: no more connections are accepted.
func (s *Server) shutdownLocked() {
	s.initLocked()
	if s.shutting {
		return
	}
	s.shutting = true
	close(s.quit)
	for ln := range s.listeners {
		ln.Close()
	}
}

// drainedLocked closes s.drained if the server is shutting down and no
// connection is left.
func (s *Server) drainedLocked() {
	if s.shutting && len(s.conns) == 0 && !s.isDrained {
		s.isDrained = true
		close(s.drained)
	}
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutting
}

// forget closes c and stops tracking it.
func (s *Server) forget(c *conn) {
	c.rwc.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.drainedLocked()
	s.mu.Unlock()
}

// serveConn reads and answers requests on c until one asks to close, the
// client hangs up, a timeout passes or the server shuts down.
func (s *Server) serveConn(c *conn) {
	defer s.forget(c)
	ctx := context.Background()
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, c.rwc)
	}
	br, _ := s.readers.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReader(c.rwc)
	} else {
		br.Reset(c.rwc)
	}
	defer func() {
		br.Reset(nil)
		s.readers.Put(br)
	}()
	for {
		if !s.await(c, br) {
			return
		}
		start := time.Now()
		var headBy, bodyBy time.Time
		if s.ReadTimeout > 0 {
			headBy, bodyBy = start.Add(s.ReadTimeout), start.Add(s.ReadTimeout)
		}
		if s.ReadHeaderTimeout > 0 && (headBy.IsZero() || s.ReadHeaderTimeout < s.ReadTimeout) {
			headBy = start.Add(s.ReadHeaderTimeout)
		}
		c.rwc.SetReadDeadline(headBy)
		req, n, err := readHead(br, s.MaxHeaderBytes, s.MaxBodyBytes)
		if err != nil {
			s.refuse(c, err)
			return
		}
		if req.expectContinue {
			if _, err := io.WriteString(c.rwc, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return
			}
		}
		c.rwc.SetReadDeadline(bodyBy)
		if err := readBody(br, req, n); err != nil {
			s.logger().Debug("request not read", "method", req.Method, "target", req.Target, "err", err)
			return
		}
		c.rwc.SetReadDeadline(time.Time{})

		rctx, cancel := context.WithCancel(ctx)
		req.ctx = rctx
		stopWatch := watchHangup(c.rwc, br, cancel)
		w := &ResponseWriter{}
		ok := s.handle(w, req)
		stopWatch()
		cancel()
		if !ok {
			return
		}
		if w.stream != nil {
			s.stream(ctx, c, br, w, req.Method == "HEAD")
			return
		}
		closing := req.Close || w.header.has("Connection", "close") || s.shuttingDown()
		answer := w.encode(req.Method == "HEAD", closing, !closing && req.Proto == "HTTP/1.0")
		if _, err := answer.WriteTo(c.rwc); err != nil || closing {
			return
		}
	}
}

// stream writes a streamed answer's head, then runs its StreamFunc until
// it returns, the client hangs up or the server shuts down; the caller
// closes the connection after.
func (s *Server) stream(ctx context.Context, c *conn, br *bufio.Reader, w *ResponseWriter, head bool) {
	answer := w.encode(head, true, false)
	if _, err := answer.WriteTo(c.rwc); err != nil || head {
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	quit := s.quit
	s.mu.Unlock()
	go func() {
		select {
		case <-quit:
			cancel()
		case <-sctx.Done():
		}
	}()
	stopWatch := watchHangup(c.rwc, br, cancel)
	defer stopWatch()
	defer func() {
		if v := recover(); v != nil && v != ErrAbortHandler {
			s.logger().Error("panic streaming an answer", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	if err := w.stream(sctx, c.rwc); err != nil && sctx.Err() == nil {
		s.logger().Debug("stream ended", "err", err)
	}
}

// await waits for the first byte of c's next request and marks c active.
// It reports false if c is done: the client hung up, a timeout passed, or
// the server is shutting down and c has already been answered.
func (s *Server) await(c *conn, br *bufio.Reader) bool {
	if br.Buffered() == 0 {
		s.mu.Lock()
		st := s.conns[c]
		if s.shutting && st != stateNew {
			s.mu.Unlock()
			return false
		}
		var by time.Time
		switch {
		case s.shutting:
			by = time.Now().Add(newConnGrace)
		case st == stateNew && s.ReadHeaderTimeout > 0:
			by = time.Now().Add(s.ReadHeaderTimeout)
		case st != stateNew && s.IdleTimeout > 0:
			by = time.Now().Add(s.IdleTimeout)
		}
		if st != stateNew {
			s.conns[c] = stateIdle
		}
		c.rwc.SetReadDeadline(by)
		s.mu.Unlock()
		if _, err := br.Peek(1); err != nil {
			return false
		}
	}
	s.mu.Lock()
	s.conns[c] = stateActive
	s.mu.Unlock()
	return true
}

// handle calls the Handler, and reports false if it panicked.
func (s *Server) handle(w *ResponseWriter, r *Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != ErrAbortHandler {
				s.logger().Error("panic serving a request", "method", r.Method, "target", r.Target, "panic", v, "stack", string(debug.Stack()))
			}
		}
	}()
	s.Handler(w, r)
	return true
}

// refuse answers a request that could not be read, if err says how.
func (s *Server) refuse(c *conn, err error) {
	var re *RequestError
	if !errors.As(err, &re) {
		if err != io.EOF {
			s.logger().Debug("request not read", "err", err)
		}
		return
	}
	s.logger().Debug("request refused", "status", re.Status, "err", re.Msg)
	w := &ResponseWriter{}
	if s.OnRequestError != nil {
		s.OnRequestError(w, re)
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(re.Status)
		io.WriteString(w, re.Msg+"\n")
	}
	c.rwc.SetWriteDeadline(time.Now().Add(lingerFor))
	answer := w.encode(false, true, false)
	if _, err := answer.WriteTo(c.rwc); err != nil {
		return
	}
	// What the client still sends (a body too large, say) is read and
	// dropped for a moment: closing with unread data would reset the
	// connection, and the client might lose the answer.
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		c.rwc.SetReadDeadline(time.Now().Add(lingerFor))
		io.Copy(io.Discard, io.LimitReader(c.rwc, 1<<20))
	}
}

// watchHangup cancels the request's context if the client hangs up while
// its request is handled, by reading ahead on the connection. The
// returned function stops the watch; br is the caller's again once it
// returns. A request followed by another already read cannot be watched.
func watchHangup(rwc net.Conn, br *bufio.Reader, cancel context.CancelFunc) (stop func()) {
	if br.Buffered() > 0 {
		return func() {}
	}
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		if _, err := br.Peek(1); err != nil && !stopping.Load() {
			cancel()
		}
	}()
	return func() {
		stopping.Store(true)
		rwc.SetReadDeadline(time.Unix(1, 0)) // unblocks the Peek
		<-done
		rwc.SetReadDeadline(time.Time{})
	}
}
