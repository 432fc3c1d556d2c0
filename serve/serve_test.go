package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/guard"
)

// A child serving on a socket it inherited, as under keel: it reports
// READY=1 on a real unixgram socket, serves, and on SIGTERM reports
// STOPPING=1, stops, lets the in-flight request finish and exits 0.
func TestServeInheritedSocketGracefulDrain(t *testing.T) {
	ln, f := listenTCP(t)
	notifyName, notify := notifySocket(t, false)
	c := startChild(t, "server", []string{
		"SERVE_TEST_SET_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http", "NOTIFY_SOCKET=" + notifyName,
	}, f)

	ready := waitState(t, notify, "READY=1")
	addr := ln.Addr().String()
	if ready["STATUS"] != "serving on "+addr {
		t.Errorf("STATUS = %q, want serving on the inherited %s", ready["STATUS"], addr)
	}
	client := newClient(t)
	base := "http://" + addr
	if status, body := getBody(t, client, base+"/hello"); status != 200 || body != "hello from "+strconv.Itoa(c.cmd.Process.Pid) {
		t.Fatalf("GET /hello = %d %q, want the child's answer", status, body)
	}
	if _, body := getBody(t, client, base+"/env"); body != `LISTEN_PID="" LISTEN_FDS="" LISTEN_FDNAMES=""` {
		t.Errorf("socket activation environment left for children: %s", body)
	}

	finish, result := slowRequest(t, client, base)
	c.waitLine(t, "inflight")
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitState(t, notify, "STOPPING=1")
	if c.exited() {
		t.Fatal("the child exited before its in-flight request finished")
	}
	finish("payload")
	if r := waitResult(t, result); r.err != nil || r.status != 200 || r.body != "done:7" {
		t.Errorf("in-flight request: %+v, want 200 done:7", r)
	}
	if code := c.wait(t); code != 0 {
		t.Errorf("exit code %d after a graceful drain, want 0", code)
	}
	c.waitLine(t, "exit-clean")
}

// Under DrainAndExit a panic answers its request 500, then the child stops
// accepting, finishes the request in flight, and exits non-zero.
func TestDrainAndExitAfterPanic(t *testing.T) {
	ln, f := listenTCP(t)
	notifyName, notify := notifySocket(t, true) // abstract name
	c := startChild(t, "server", []string{
		"SERVE_TEST_SET_PID=1", "LISTEN_FDS=1", "NOTIFY_SOCKET=" + notifyName, "SERVE_TEST_POLICY=drain",
	}, f)
	waitState(t, notify, "READY=1")
	client := newClient(t)
	base := "http://" + ln.Addr().String()

	finish, result := slowRequest(t, client, base)
	c.waitLine(t, "inflight")

	status, body := getBody(t, client, base+"/panic")
	if status != 500 || !strings.HasPrefix(body, "500 Internal Server Error") {
		t.Errorf("GET /panic = %d %q, want 500", status, body)
	}
	waitState(t, notify, "STOPPING=1")
	if c.exited() {
		t.Fatal("the child exited before its in-flight request finished")
	}
	finish("payload!")
	if r := waitResult(t, result); r.err != nil || r.status != 200 || r.body != "done:8" {
		t.Errorf("in-flight request: %+v, want 200 done:8", r)
	}
	if code := c.wait(t); code != 1 {
		t.Errorf("exit code %d after a panic under DrainAndExit, want 1", code)
	}
	line := c.waitLine(t, "exit-error:")
	if !strings.Contains(line, "panicked=true") || !strings.Contains(line, "panic: helper handler bug") {
		t.Errorf("Run's error: %q, want one wrapping ErrPanicked and the panic", line)
	}
	logs := c.stderr.String()
	for _, want := range []string{`"msg":"guard: panic serving request"`, `"path":"/panic"`, `helper handler bug`, `"stack":"goroutine `} {
		if !strings.Contains(logs, want) {
			t.Errorf("child log lacks %s:\n%s", want, logs)
		}
	}
}

// When in-flight requests outlive the shutdown timeout, their connections
// are closed and the child exits non-zero, saying so.
func TestShutdownDeadlineForcesClose(t *testing.T) {
	ln, f := listenTCP(t)
	notifyName, notify := notifySocket(t, false)
	c := startChild(t, "server", []string{
		"SERVE_TEST_SET_PID=1", "LISTEN_FDS=1", "NOTIFY_SOCKET=" + notifyName, "SERVE_TEST_TIMEOUT=200ms",
	}, f)
	waitState(t, notify, "READY=1")
	client := newClient(t)
	finish, result := slowRequest(t, client, "http://"+ln.Addr().String())
	c.waitLine(t, "inflight")
	c.cmd.Process.Signal(syscall.SIGTERM)
	if code := c.wait(t); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	// Go's client reports the closed connection once its request body is
	// done; the body is still open, as the stuck request's was.
	finish("late")
	if r := waitResult(t, result); r.err == nil {
		t.Errorf("the stuck request got %+v; want its connection closed", r)
	}
	line := c.waitLine(t, "exit-error:")
	if !strings.Contains(line, "did not finish within 200ms") || !strings.Contains(line, "context deadline exceeded") {
		t.Errorf("Run's error: %q", line)
	}
}

// Options.Names picks inherited sockets by LISTEN_FDNAMES.
func TestServeSelectsSocketsByName(t *testing.T) {
	lnA, fA := listenTCP(t)
	lnB, fB := listenTCP(t)
	notifyName, notify := notifySocket(t, false)
	c := startChild(t, "server", []string{
		"SERVE_TEST_SET_PID=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=admin:public",
		"NOTIFY_SOCKET=" + notifyName, "SERVE_TEST_NAMES=public",
	}, fA, fB)
	ready := waitState(t, notify, "READY=1")
	if ready["STATUS"] != "serving on "+lnB.Addr().String() {
		t.Errorf("STATUS = %q, want only the socket named public (%s; admin is %s)", ready["STATUS"], lnB.Addr(), lnA.Addr())
	}
	if status, _ := getBody(t, newClient(t), "http://"+lnB.Addr().String()+"/hello"); status != 200 {
		t.Errorf("GET on public = %d", status)
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	if code := c.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0", code)
	}
}

// Listeners against go-systemd's activation package, on the same real fds.
func TestListenersMatchGoSystemd(t *testing.T) {
	_, f1 := listenTCP(t)
	_, f2 := listenTCP(t)
	unix := t.TempDir() + "/s.sock"
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: unix, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	uf, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	defer uf.Close()

	env := []string{"SERVE_TEST_SET_PID=1", "LISTEN_FDS=3", "LISTEN_FDNAMES=web::sock"}
	var outs []string
	for _, helper := range []string{"listeners", "systemd"} {
		c := startChild(t, helper, env, f1, f2, uf)
		if code := c.wait(t); code != 0 {
			t.Fatalf("%s helper exited %d: %s", helper, code, c.stderr)
		}
		var lines []string
		for len(c.lines) > 0 {
			lines = append(lines, <-c.lines)
		}
		outs = append(outs, strings.Join(lines, "\n"))
	}
	// Ours keeps fd order; go-systemd's map has none, so compare sorted.
	ours := strings.Split(outs[0], "\n")
	if len(ours) != 4 || !strings.HasPrefix(ours[0], "web 127.0.0.1:") || !strings.HasPrefix(ours[1], " 127.0.0.1:") ||
		ours[2] != "sock "+unix || ours[3] != `env "" "" ""` {
		t.Errorf("Listeners printed:\n%s", outs[0])
	}
	sortedOurs := append([]string(nil), ours[:3]...)
	slices.Sort(sortedOurs)
	if want := strings.Join(sortedOurs, "\n") + "\n" + ours[3]; want != outs[1] {
		t.Errorf("Listeners and go-systemd disagree:\nours:\n%s\ngo-systemd:\n%s", want, outs[1])
	}
}

// A LISTEN_PID naming another process means the sockets are not ours.
func TestListenersIgnoresOtherPID(t *testing.T) {
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getppid()))
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "http")
	lns, err := Listeners()
	if lns != nil || err != nil {
		t.Fatalf("Listeners() = %v, %v; want nothing for another pid", lns, err)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, set := os.LookupEnv(k); set {
			t.Errorf("%s still set", k)
		}
	}
}

func TestListenersMalformedEnvironment(t *testing.T) {
	for _, env := range [][2]string{{strconv.Itoa(os.Getpid()), "three"}, {"", "1"}, {"x", "1"}, {strconv.Itoa(os.Getpid()), "-1"}} {
		t.Setenv("LISTEN_PID", env[0])
		t.Setenv("LISTEN_FDS", env[1])
		lns, err := Listeners()
		if err == nil || lns != nil {
			t.Errorf("LISTEN_PID=%q LISTEN_FDS=%q: got %v, %v; want an error", env[0], env[1], lns, err)
		}
	}
	os.Unsetenv("LISTEN_FDS")
	if lns, err := Listeners(); lns != nil || err != nil {
		t.Errorf("without LISTEN_FDS: %v, %v", lns, err)
	}
}

// serveInProcess runs Serve in a goroutine on 127.0.0.1:0, with NOTIFY_SOCKET
// pointing at a test socket, and returns the address it serves on (from its
// STATUS) and its result.
func serveInProcess(t *testing.T, ctx context.Context, h http.Handler, opts Options) (string, <-chan error, func(string) map[string]string) {
	t.Helper()
	return serveServer(t, ctx, &http.Server{Handler: h}, opts)
}

// serveServer is serveInProcess for a server the test made.
func serveServer(t *testing.T, ctx context.Context, srv *http.Server, opts Options) (string, <-chan error, func(string) map[string]string) {
	t.Helper()
	name, notify := notifySocket(t, true)
	t.Setenv("NOTIFY_SOCKET", name)
	opts.Addr = "127.0.0.1:0"
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, opts) }()
	ready := waitState(t, notify, "READY=1")
	addr, ok := strings.CutPrefix(ready["STATUS"], "serving on ")
	if !ok {
		t.Fatalf("STATUS = %q", ready["STATUS"])
	}
	return addr, done, func(want string) map[string]string { return waitState(t, notify, want) }
}

func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitFor):
		t.Fatal("Serve did not return")
		return nil
	}
}

// Without keel's sockets Serve listens on the given address, and a canceled
// context is a clean stop.
func TestServeOnAddressStopsCleanlyOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	var sawCtxValue bool
	type key struct{}
	ctx = context.WithValue(ctx, key{}, "from Serve's ctx")
	addr, done, wait := serveInProcess(t, ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawCtxValue = r.Context().Value(key{}) == "from Serve's ctx"
		io.WriteString(w, "hi")
	}), Options{})
	if status, body := getBody(t, newClient(t), "http://"+addr+"/"); status != 200 || body != "hi" {
		t.Fatalf("GET = %d %q", status, body)
	}
	if !sawCtxValue {
		t.Error("request contexts do not carry Serve's context values")
	}
	cancel(errors.New("test says stop"))
	if st := wait("STOPPING=1"); st["STATUS"] != "draining" {
		t.Errorf("STOPPING datagram: %v", st)
	}
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v after cancel, want nil", err)
	}
}

// KeepServing: a panic is answered 500 and the server carries on.
func TestKeepServingAfterPanic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("contained") })
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr, done, _ := serveInProcess(t, ctx, mux, Options{OnPanic: KeepServing})
	client := newClient(t)
	for range 3 {
		if status, _ := getBody(t, client, "http://"+addr+"/panic"); status != 500 {
			t.Errorf("GET /panic = %d, want 500", status)
		}
		if status, body := getBody(t, client, "http://"+addr+"/ok"); status != 200 || body != "ok" {
			t.Errorf("GET /ok = %d %q after a panic", status, body)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v under KeepServing", err)
	default:
	}
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v", err)
	}
}

// DrainAndExit in process: Serve returns an error wrapping ErrPanicked and
// the panic, also for a panic in a goroutine of the request's scope.
func TestDrainAndExitReturnsThePanic(t *testing.T) {
	addr, done, wait := serveInProcess(t, context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := guard.ScopeOf(w)
		s.Go(func(context.Context) error { panic("scoped") })
		s.Wait()
	}), Options{OnPanic: DrainAndExit})
	if status, _ := getBody(t, newClient(t), "http://"+addr+"/"); status != 500 {
		t.Errorf("status %d, want 500", status)
	}
	wait("STOPPING=1")
	err := waitServe(t, done)
	var pe *guard.PanicError
	if !errors.Is(err, ErrPanicked) || !errors.As(err, &pe) || pe.Value != "scoped" {
		t.Fatalf("Serve() = %v, want ErrPanicked wrapping the scope's panic", err)
	}
}

func TestServeWithoutAnyAddressFails(t *testing.T) {
	err := Serve(context.Background(), &http.Server{}, Options{})
	if err == nil || !strings.Contains(err.Error(), "set Options.Addr or http.Server.Addr") {
		t.Errorf("Serve() = %v", err)
	}
}

func TestPanicPolicyString(t *testing.T) {
	for p, want := range map[PanicPolicy]string{KeepServing: "keep-serving", DrainAndExit: "drain-and-exit", 7: "PanicPolicy(7)"} {
		if got := fmt.Sprint(p); got != want {
			t.Errorf("%d: %q, want %q", int(p), got, want)
		}
	}
}

// With srv.TLSConfig set, Serve serves TLS.
func TestServeTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate and client
	certs, client := ts.TLS.Certificates, ts.Client()
	ts.Close()
	t.Cleanup(client.CloseIdleConnections)

	name, notify := notifySocket(t, false)
	t.Setenv("NOTIFY_SOCKET", name)
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.TLS != nil) }),
		TLSConfig: &tls.Config{Certificates: certs},
	}
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, srv, Options{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	}()
	addr, _ := strings.CutPrefix(waitState(t, notify, "READY=1")["STATUS"], "serving on ")
	if status, body := getBody(t, client, "https://"+addr+"/"); status != 200 || body != "true" {
		t.Errorf("GET over TLS = %d %q", status, body)
	}
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v", err)
	}
}

// Under keel the socket is shared, so a connection this process accepted
// just before its drain began can be answered by no one else: its request
// is served (with Connection: close), not dropped as net/http's Shutdown
// alone would drop a request it reads once shutting down.
func TestDrainAnswersAConnectionAcceptedBeforeIt(t *testing.T) {
	name, notify := notifySocket(t, true)
	t.Setenv("NOTIFY_SOCKET", name)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	accepted := make(chan struct{}, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "late but served") }),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				select {
				case accepted <- struct{}{}:
				default:
				}
			}
		},
	}
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, srv, Options{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	}()
	addr, _ := strings.CutPrefix(waitState(t, notify, "READY=1")["STATUS"], "serving on ")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-accepted:
	case <-time.After(waitFor):
		t.Fatal("the server did not accept the connection")
	}
	cancel()
	waitState(t, notify, "STOPPING=1")
	// The drain has begun; only now does the request arrive.
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v (the request was dropped)", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "late but served" || !resp.Close {
		t.Errorf("answer %d %q, Connection: close %v; want 200, the body, close", resp.StatusCode, body, resp.Close)
	}
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}

// connEvent is a server-side connection's change of state, keyed by the
// client's address.
type connEvent struct {
	client string
	state  http.ConnState
}

// watchConns returns a ConnState hook that reports every change, and a
// function that waits for the connection dialed as c to reach st.
func watchConns(t *testing.T) (func(net.Conn, http.ConnState), func(c net.Conn, st http.ConnState)) {
	events := make(chan connEvent, 100)
	hook := func(c net.Conn, st http.ConnState) {
		events <- connEvent{c.RemoteAddr().String(), st}
	}
	wait := func(c net.Conn, st http.ConnState) {
		t.Helper()
		deadline := time.After(waitFor)
		for {
			select {
			case e := <-events:
				if e.client == c.LocalAddr().String() && e.state == st {
					return
				}
			case <-deadline:
				t.Fatalf("connection %s never reached %s on the server", c.LocalAddr(), st)
			}
		}
	}
	return hook, wait
}

// rawConn is an HTTP/1.1 client connection the test drives request by
// request.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c, bufio.NewReader(c)}
}

// get sends GET path and reads the answer; err says why there is none.
func (c *rawConn) get(path string) (resp *http.Response, body string, err error) {
	c.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return nil, "", err
	}
	resp, err = http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// closedByServer reports whether the server closed c (the client reads
// EOF), waiting for it up to waitFor.
func (c *rawConn) closedByServer(t *testing.T) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	_, err := c.br.ReadByte()
	if err != nil && !errors.Is(err, io.EOF) {
		t.Logf("reading from %s: %v", c.LocalAddr(), err)
	}
	return errors.Is(err, io.EOF)
}

// A keep-alive connection that was idle when the drain began may already
// carry the client's next request: that request is answered (the handler
// sees Connection: close already set, and the answer says it), not reset
// as net/http's SetKeepAlivesEnabled(false) or Shutdown would reset it.
func TestDrainAnswersARequestOnAnIdleKeepAliveConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook, waitConn := watchConns(t)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "connection=%q", w.Header().Get("Connection"))
		}),
		ConnState: hook,
	}
	addr, done, wait := serveServer(t, ctx, srv, Options{})
	c := dialRaw(t, addr)
	resp, body, err := c.get("/")
	if err != nil || resp.StatusCode != 200 || resp.Close || body != `connection=""` {
		t.Fatalf("before the drain: %v, %q, %v; want 200, keep-alive", resp, body, err)
	}
	waitConn(c, http.StateIdle)

	cancel()
	wait("STOPPING=1")
	// The drain has begun with the connection idle; now the client reuses it.
	resp, body, err = c.get("/")
	if err != nil {
		t.Fatalf("request on the idle keep-alive connection during the drain: %v (dropped)", err)
	}
	if resp.StatusCode != 200 || !resp.Close || body != `connection="close"` {
		t.Errorf("answer %d %q, Connection: close %v; want 200, the handler seeing close, close", resp.StatusCode, body, resp.Close)
	}
	if !c.closedByServer(t) {
		t.Error("the server did not close the connection after answering Connection: close")
	}
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}

// Connections that stay idle through the drain — one between requests, one
// that never sent a request — are closed once the grace is over, and Serve
// returns nil without waiting for ShutdownTimeout.
func TestDrainClosesIdleConnectionsAfterTheGrace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook, waitConn := watchConns(t)
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: hook,
	}
	// waitServe gives up long before this deadline would end the drain.
	addr, done, wait := serveServer(t, ctx, srv, Options{ShutdownTimeout: 10 * waitFor})
	keptAlive := dialRaw(t, addr)
	if resp, _, err := keptAlive.get("/"); err != nil || resp.Close {
		t.Fatalf("before the drain: %v, %v; want a keep-alive answer", resp, err)
	}
	waitConn(keptAlive, http.StateIdle)
	silent := dialRaw(t, addr)
	waitConn(silent, http.StateNew)

	cancel()
	wait("STOPPING=1")
	for name, c := range map[string]*rawConn{"idle keep-alive": keptAlive, "silent new": silent} {
		if !c.closedByServer(t) {
			t.Errorf("the %s connection was not closed", name)
		}
	}
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}

// When the deadline comes with only idle connections left (ShutdownTimeout
// no longer than the grace), closing them is a clean stop, not an error.
func TestDrainDeadlineWithOnlyIdleConnectionsIsClean(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook, waitConn := watchConns(t)
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: hook,
	}
	addr, done, _ := serveServer(t, ctx, srv, Options{ShutdownTimeout: 50 * time.Millisecond})
	c := dialRaw(t, addr)
	if _, _, err := c.get("/"); err != nil {
		t.Fatal(err)
	}
	waitConn(c, http.StateIdle)
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
	if !c.closedByServer(t) {
		t.Error("the idle connection was left open")
	}
}

// An idle HTTP/2 connection is not cut when its grace ends: it is left to
// Shutdown, whose GOAWAY lets the client stop using it cleanly.
func TestDrainLeavesHTTP2ToShutdown(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.NotFoundHandler()) // for its certificate and client
	ts.EnableHTTP2 = true
	ts.StartTLS()
	certs, client := ts.TLS.Certificates, ts.Client()
	ts.Close()
	t.Cleanup(client.CloseIdleConnections)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var closed atomic.Int32
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.ProtoMajor) }),
		TLSConfig: &tls.Config{Certificates: certs},
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed.Add(1)
			}
		},
	}
	closedAtShutdown := make(chan int32, 1)
	srv.RegisterOnShutdown(func() { closedAtShutdown <- closed.Load() })
	addr, done, _ := serveServer(t, ctx, srv, Options{})
	if status, body := getBody(t, client, "https://"+addr+"/"); status != 200 || body != "2" {
		t.Fatalf("GET = %d %q, want 200 over HTTP/2", status, body)
	}
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
	select {
	case n := <-closedAtShutdown:
		if n != 0 {
			t.Error("the idle HTTP/2 connection was closed before Shutdown could send GOAWAY")
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown never ran the RegisterOnShutdown functions")
	}
}
