package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger writes the server's log into the test's log, and counts
// records with the given message.
type testLogger struct {
	t  *testing.T
	mu sync.Mutex
	n  map[string]int
}

func (l *testLogger) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range []string{"panic serving a request", "request refused"} {
		if strings.Contains(string(b), m) {
			l.n[m]++
		}
	}
	return len(b), nil
}

func (l *testLogger) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg]
}

type running struct {
	srv  *Server
	addr string
	log  *testLogger
	done chan error
}

// start serves srv on 127.0.0.1 until the test ends; its Logger logs to
// the test.
func start(t *testing.T, srv *Server) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &testLogger{t: t, n: map[string]int{}}
	srv.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := &running{srv: srv, addr: ln.Addr().String(), log: l, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-r.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v, want ErrServerClosed", err)
		}
	})
	return r
}

// echo answers with the method, target and body, and the header field
// X-Answer as its status.
func echo(w *ResponseWriter, r *Request) {
	w.Header().Set("Content-Type", "text/plain")
	if code := r.Header.Get("X-Status"); code != "" {
		var n int
		fmt.Sscan(code, &n)
		w.WriteHeader(n)
	}
	fmt.Fprintf(w, "%s %s %s", r.Method, r.Target, r.Body)
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// answer reads one answer: its status, body and whether it asks to close.
func (c *client) answer() (status, body string, close bool) {
	c.t.Helper()
	resp, err := ReadResponse(c.br, "GET")
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.Status, string(b), resp.Close
}

// closed checks that the server closed the connection.
func (c *client) closed() {
	c.t.Helper()
	if b, err := c.br.ReadByte(); err != io.EOF {
		c.t.Fatalf("read %q, %v: want the connection closed", b, err)
	}
}

func TestKeepAlive(t *testing.T) {
	r := start(t, &Server{Handler: echo})
	c := dial(t, r.addr)
	c.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
	if s, b, cl := c.answer(); s != "200 OK" || b != "GET /one " || cl {
		t.Fatalf("first answer: %s %q close %v", s, b, cl)
	}
	c.send("POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nX-Status: 201\r\n\r\nbody")
	if s, b, cl := c.answer(); s != "201" || b != "POST /two body" || cl {
		t.Fatalf("second answer: %s %q close %v", s, b, cl)
	}
	// Two requests in one write, the second asking to close.
	c.send("GET /3 HTTP/1.1\r\nHost: x\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, b, cl := c.answer(); b != "GET /3 " || cl {
		t.Fatalf("third answer: %q close %v", b, cl)
	}
	if _, b, cl := c.answer(); b != "GET /4 " || !cl {
		t.Fatalf("fourth answer: %q close %v, want Connection: close", b, cl)
	}
	c.closed()
}

func TestHTTP10(t *testing.T) {
	r := start(t, &Server{Handler: echo})
	c := dial(t, r.addr)
	c.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if _, b, cl := c.answer(); b != "GET /a " || cl {
		t.Fatalf("keep-alive answer: %q close %v", b, cl)
	}
	c.send("GET /b HTTP/1.0\r\n\r\n")
	if _, b, cl := c.answer(); b != "GET /b " || !cl {
		t.Fatalf("answer: %q close %v", b, cl)
	}
	c.closed()
}

func TestHead(t *testing.T) {
	r := start(t, &Server{Handler: echo})
	c := dial(t, r.addr)
	c.send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := ReadResponse(c.br, "HEAD")
	if err != nil || resp.Header.Get("Content-Length") != "8" {
		t.Fatalf("HEAD: %+v %v, want the length of the body it would have", resp, err)
	}
	if _, b, _ := c.answer(); b != "GET /g " {
		t.Fatalf("the answer after HEAD: %q", b)
	}
}

func TestRefusals(t *testing.T) {
	json := &Server{Handler: echo, MaxHeaderBytes: 100, MaxBodyBytes: 10, OnRequestError: func(w *ResponseWriter, e *RequestError) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.Status)
		fmt.Fprintf(w, `{"error":%q}`, e.Msg)
	}}
	plain := &Server{Handler: echo, MaxHeaderBytes: 100, MaxBodyBytes: 10}
	for _, tc := range []struct {
		srv          *Server
		req          string
		status, body string
	}{
		{plain, "BLAH\r\n\r\n", "400 Bad Request", "malformed request line \"BLAH\"\n"},
		{json, "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("y", 100) + "\r\n\r\n", "431 Request Header Fields Too Large", `{"error":"request line and header over 100 bytes"}`},
		{json, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + strings.Repeat("z", 11), "413 Request Entity Too Large", `{"error":"request body of 11 bytes is over the 10 allowed"}`},
		{plain, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "501 Not Implemented", "Transfer-Encoding \"chunked\" is not supported: send the body with a Content-Length\n"},
		{plain, "GET / HTTP/3.0\r\nHost: x\r\n\r\n", "505 HTTP Version Not Supported", "HTTP/3.0 is not supported: speak HTTP/1.1\n"},
	} {
		r := start(t, tc.srv)
		c := dial(t, r.addr)
		c.send(tc.req)
		s, b, cl := c.answer()
		if s != tc.status || b != tc.body || !cl {
			t.Errorf("%.40q: %s %q close %v, want %s %q and close", tc.req, s, b, cl, tc.status, tc.body)
		}
		c.closed()
	}
}

func TestExpectContinue(t *testing.T) {
	r := start(t, &Server{Handler: echo})
	c := dial(t, r.addr)
	c.send("POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
	want := "HTTP/1.1 100 Continue\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != want {
		t.Fatalf("read %q %v, want 100 Continue before the body", got, err)
	}
	c.send("abc")
	if _, b, _ := c.answer(); b != "POST /e abc" {
		t.Fatalf("answer %q", b)
	}
}

func TestPanics(t *testing.T) {
	r := start(t, &Server{Handler: func(w *ResponseWriter, r *Request) {
		switch r.Target {
		case "/panic":
			w.Write([]byte("half an answer"))
			panic("boom")
		case "/abort":
			panic(ErrAbortHandler)
		}
		echo(w, r)
	}})
	for _, target := range []string{"/panic", "/abort"} {
		c := dial(t, r.addr)
		c.send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")
		c.closed()
	}
	if n := r.log.count("panic serving a request"); n != 1 {
		t.Fatalf("%d panics logged, want 1 (an abort is not logged)", n)
	}
	// The server survives.
	c := dial(t, r.addr)
	c.send("GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, b, _ := c.answer(); b != "GET /fine " {
		t.Fatalf("answer after the panics: %q", b)
	}
}

// TestHangUpCancels: a client that hangs up ends its request's context.
func TestHangUpCancels(t *testing.T) {
	started, ended := make(chan struct{}), make(chan error, 1)
	r := start(t, &Server{Handler: func(w *ResponseWriter, r *Request) {
		close(started)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}})
	c := dial(t, r.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	c.c.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("context ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the handler's context was not cancelled when its client hung up")
	}
}

type ctxKey struct{}

func TestConnContext(t *testing.T) {
	r := start(t, &Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, c.RemoteAddr().String())
		},
		Handler: func(w *ResponseWriter, r *Request) {
			fmt.Fprint(w, r.Context().Value(ctxKey{}))
		},
	})
	c := dial(t, r.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, b, _ := c.answer(); b != c.c.LocalAddr().String() {
		t.Fatalf("context value %q, want the client's address %s", b, c.c.LocalAddr())
	}
}

func TestTimeouts(t *testing.T) {
	r := start(t, &Server{Handler: echo, ReadHeaderTimeout: 20 * time.Millisecond, IdleTimeout: 20 * time.Millisecond})
	// A header that never ends is dropped.
	c := dial(t, r.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n")
	c.closed()
	// So is a connection that stays idle.
	c = dial(t, r.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.answer()
	c.closed()
	// And one that never sends anything.
	dial(t, r.addr).closed()

	r = start(t, &Server{Handler: echo, ReadTimeout: 20 * time.Millisecond})
	c = dial(t, r.addr)
	c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nslow")
	c.closed()
}

// TestShutdown: in-flight requests are answered, idle connections closed,
// new ones refused; Serve returns ErrServerClosed.
func TestShutdown(t *testing.T) {
	release, inside := make(chan struct{}), make(chan struct{}, 1)
	srv := &Server{Handler: func(w *ResponseWriter, r *Request) {
		if r.Target == "/slow" {
			inside <- struct{}{}
			<-release
		}
		echo(w, r)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	idle := dial(t, ln.Addr().String())
	idle.send("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.answer()
	busy := dial(t, ln.Addr().String())
	busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-inside

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v, want ErrServerClosed", err)
	}
	idle.closed()
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("a connection was accepted after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	if _, b, cl := busy.answer(); b != "GET /slow " || !cl {
		t.Fatalf("the request in flight got %q, close %v; want its answer and Connection: close", b, cl)
	}
	busy.closed()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestShutdownDeadline: a handler that outlives the deadline makes
// Shutdown return ctx's error; Close then closes its connection, which
// cancels its context.
func TestShutdownDeadline(t *testing.T) {
	inside, ended := make(chan struct{}), make(chan struct{})
	srv := &Server{Handler: func(w *ResponseWriter, r *Request) {
		close(inside)
		<-r.Context().Done()
		close(ended)
	}}
	r := start(t, srv)
	c := dial(t, r.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-inside
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	srv.Close()
	c.closed()
	<-ended
}

// TestShutdownServesNewConnections: a connection accepted but silent when
// Shutdown starts may still send its request, and is answered.
func TestShutdownServesNewConnections(t *testing.T) {
	srv := &Server{Handler: echo}
	r := start(t, srv)
	c := dial(t, r.addr)
	poll.Until(t, 20*time.Second, "the server to accept the connection", func() bool { return hasConn(srv, stateNew) })
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	// The request arrives once the shutdown has begun, so its answer must
	// also say the connection closes.
	poll.Until(t, 20*time.Second, "the shutdown to begin", srv.shuttingDown)
	c.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, b, cl := c.answer(); b != "GET /late " || !cl {
		t.Fatalf("answer %q close %v", b, cl)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func hasConn(s *Server, st connState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cs := range s.conns {
		if cs == st {
			return true
		}
	}
	return false
}
