package nodeipc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/sockets"
)

// These tests run real node processes with the preload and a Go parent
// that owns the sockets, as keel's keeper will.

const waitLimit = 20 * time.Second

func requireNode(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (not in PATH): skipping the tests that run the preload in real Node processes")
	}
	return p
}

// output collects a stream and lets a test wait for text in it.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output contains s and returns the output.
func (o *output) waitFor(t *testing.T, s string) string {
	t.Helper()
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for {
		o.mu.Lock()
		text, ch := o.buf.String(), o.changed
		o.mu.Unlock()
		if strings.Contains(text, s) {
			return text
		}
		select {
		case <-ch:
		case <-limit.C:
			t.Fatalf("no %q in output within %v; got:\n%s", s, waitLimit, text)
		}
	}
}

type nodeOpts struct {
	script    string
	env       []string
	listen    ListenFunc // nil: no Handler.Listen (every port is "self")
	noChannel bool       // run without keel's channel
	dir       string
	stdout    *os.File   // instead of a collector that reads promptly
	extra     []*os.File // more inherited descriptors, from fd 4 on
}

type nodeApp struct {
	cmd      *exec.Cmd
	conn     *Conn
	events   chan Event
	stdout   *output
	stderr   *output
	exited   chan struct{}
	waitErr  error
	cancel   context.CancelFunc
	served   chan error
	testName string
}

func startNode(t *testing.T, o nodeOpts) *nodeApp {
	t.Helper()
	node := requireNode(t)
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	script := filepath.Join(dir, "app.js")
	if err := os.WriteFile(script, []byte(o.script), 0o644); err != nil {
		t.Fatal(err)
	}
	preload, err := PreloadPath(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := &nodeApp{
		events:   make(chan Event, 64),
		stdout:   newOutput(),
		stderr:   newOutput(),
		exited:   make(chan struct{}),
		served:   make(chan error, 1),
		testName: t.Name(),
	}
	a.cmd = exec.Command(node, "--require", preload, script)
	a.cmd.Dir = dir
	a.cmd.Stdout = a.stdout
	if o.stdout != nil {
		a.cmd.Stdout = o.stdout
	}
	a.cmd.Stderr = a.stderr
	a.cmd.Env = append(os.Environ(), o.env...)
	var child *os.File
	if !o.noChannel {
		a.conn, child, err = NewChannel()
		if err != nil {
			t.Fatal(err)
		}
		a.cmd.ExtraFiles = append([]*os.File{child}, o.extra...)
		a.cmd.Env = append(a.cmd.Env, ChildEnv(3, "")...)
		// An explicit KEEL_STOP_SIGNAL in o.env comes later and wins.
		a.cmd.Env = append(a.cmd.Env, o.env...)
	}
	err = a.cmd.Start()
	if child != nil {
		child.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.exited)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if a.conn != nil {
		h := &Handler{Listen: o.listen, Events: a.events}
		go func() { a.served <- h.Serve(ctx, a.conn) }()
	} else {
		a.served <- nil
	}
	t.Cleanup(func() {
		select {
		case <-a.exited:
		default:
			a.cmd.Process.Kill()
			<-a.exited
		}
		cancel()
		<-a.served
		if a.conn != nil {
			a.conn.Close()
		}
		if t.Failed() {
			t.Logf("stdout of %s:\n%s", filepath.Base(script), a.stdout.String())
			t.Logf("stderr of %s:\n%s", filepath.Base(script), a.stderr.String())
		}
	})
	return a
}

// event waits for the next event of kind, skipping others.
func (a *nodeApp) event(t *testing.T, kind EventKind) Event {
	t.Helper()
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for {
		select {
		case ev := <-a.events:
			if ev.Kind == kind {
				return ev
			}
		case <-a.exited:
			// Events may still be buffered.
			select {
			case ev := <-a.events:
				if ev.Kind == kind {
					return ev
				}
				continue
			default:
			}
			t.Fatalf("node exited (%v) before a %v event", a.waitErr, kind)
		case <-limit.C:
			t.Fatalf("no %v event within %v", kind, waitLimit)
		}
	}
}

// wait waits for the process to exit and returns its status.
func (a *nodeApp) wait(t *testing.T) (code int, sig syscall.Signal) {
	t.Helper()
	select {
	case <-a.exited:
	case <-time.After(waitLimit):
		t.Fatalf("node did not exit within %v", waitLimit)
	}
	ws := a.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

func (a *nodeApp) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// holdPort binds a port on every interface and keeps it for the test: a
// node process that tried to bind it itself would fail with EADDRINUSE.
func holdPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// serveOn answers a request for port with l's socket and anything else
// with "self"; it records the requests.
func serveOn(port int, l *sockets.Listener, reqs chan<- ListenRequest) ListenFunc {
	return func(ctx context.Context, req ListenRequest) (*os.File, error) {
		if reqs != nil {
			select {
			case reqs <- req:
			default:
			}
		}
		if req.Port == port {
			return l.File(), nil
		}
		return nil, nil
	}
}

func httpGet(t *testing.T, addr, path string) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{Timeout: waitLimit, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

const helloApp = `
const http = require('http');
const port = Number(process.env.PORT);
const server = http.createServer((req, res) => res.end('hello from ' + process.pid));
server.listen(port, () => {
  const a = server.address();
  console.log('listening ' + a.port + ' ' + a.address);
});
`

func TestNodeServesOnKeelSocket(t *testing.T) {
	port := holdPort(t)
	l := listenTCP(t)
	reqs := make(chan ListenRequest, 4)
	app := startNode(t, nodeOpts{
		script: helloApp,
		env:    []string{"PORT=" + strconv.Itoa(port)},
		listen: serveOn(port, l, reqs),
	})
	ev := app.event(t, EventListening)
	lport := l.LocalAddr().(*net.TCPAddr).Port
	if !ev.Listening.Keel || ev.Listening.Port != lport || ev.Listening.Address != "127.0.0.1" || ev.Listening.Family != "IPv4" {
		t.Fatalf("listening %+v, want keel's socket on 127.0.0.1:%d", ev.Listening, lport)
	}
	if req := <-reqs; req != (ListenRequest{ID: ev.Listening.ID, Port: port}) {
		t.Fatalf("request %+v", req)
	}
	// server.address() is the socket's real address.
	app.stdout.waitFor(t, fmt.Sprintf("listening %d 127.0.0.1", lport))
	code, body, _ := httpGet(t, l.LocalAddr().String(), "/")
	if code != 200 || body != fmt.Sprintf("hello from %d", app.cmd.Process.Pid) {
		t.Fatalf("GET = %d %q", code, body)
	}
}

func TestNodeTwoProcessesShareOneSocket(t *testing.T) {
	port := holdPort(t)
	l := listenTCP(t)
	var pids []string
	for i := 0; i < 2; i++ {
		app := startNode(t, nodeOpts{
			script: helloApp,
			env:    []string{"PORT=" + strconv.Itoa(port)},
			listen: serveOn(port, l, nil),
		})
		app.event(t, EventListening)
		pids = append(pids, strconv.Itoa(app.cmd.Process.Pid))
	}
	seen := map[string]int{}
	limit := time.Now().Add(waitLimit)
	for len(seen) < 2 {
		if time.Now().After(limit) {
			t.Fatalf("only %v served within %v (want %v)", seen, waitLimit, pids)
		}
		_, body, _ := httpGet(t, l.LocalAddr().String(), "/")
		seen[strings.TrimPrefix(body, "hello from ")]++
	}
	for _, p := range pids {
		if seen[p] == 0 {
			t.Fatalf("served by %v, want %v", seen, pids)
		}
	}
}

func TestNodeReadyMessageAndAppMessages(t *testing.T) {
	app := startNode(t, nodeOpts{script: `
process.on('message', (m) => {
  console.log('app got ' + JSON.stringify(m));
  if (m === 'bye') process.disconnect();
});
require('http').createServer(() => {}).listen(0, () => process.send('ready'));
process.send({ custom: 1 });
`})
	if ev := app.event(t, EventMessage); string(ev.Message) != `{"custom":1}` {
		t.Fatalf("message %s", ev.Message)
	}
	app.event(t, EventReady)
	if err := app.conn.Send("hi"); err != nil {
		t.Fatal(err)
	}
	app.stdout.waitFor(t, `app got "hi"`)
	if err := app.conn.Send("bye"); err != nil {
		t.Fatal(err)
	}
	app.stdout.waitFor(t, `app got "bye"`)
	// keel's own traffic (the listen request's answer) never reached the
	// app's 'message' listener.
	if out := app.stdout.String(); strings.Contains(out, "NODE_") {
		t.Fatalf("the app saw keel's messages:\n%s", out)
	}
}

func TestNodeExitsWhenItsServerCloses(t *testing.T) {
	port := holdPort(t)
	l := listenTCP(t)
	app := startNode(t, nodeOpts{
		script: `
const http = require('http');
const server = http.createServer((req, res) => {
  res.end('last');
  server.close(() => console.log('closed'));
});
server.listen(Number(process.env.PORT));
`,
		env:    []string{"PORT=" + strconv.Itoa(port)},
		listen: serveOn(port, l, nil),
	})
	app.event(t, EventListening)
	if _, body, _ := httpGet(t, l.LocalAddr().String(), "/"); body != "last" {
		t.Fatalf("body %q", body)
	}
	// Nothing keeps the event loop alive: not the IPC channel, not keel.
	if code, sig := app.wait(t); code != 0 || sig != 0 {
		t.Fatalf("exit %d %v, want 0", code, sig)
	}
	if !strings.Contains(app.stdout.String(), "closed") {
		t.Fatal("the close callback did not run")
	}
}

// rawConn is a keep-alive HTTP/1.1 client connection.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitLimit))
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(t *testing.T, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(r.c, "GET %s HTTP/1.1\r\nHost: keel\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
}

func (r *rawConn) response(t *testing.T) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// closedByServer waits for the server to close the connection.
func (r *rawConn) closedByServer(t *testing.T) {
	t.Helper()
	n, err := r.br.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read = %d, %v; want EOF from the server", n, err)
	}
}

const slowApp = `
const http = require('http');
let held = null;
const server = http.createServer((req, res) => {
  if (req.url === '/slow') { held = res; process.send('slow started'); return; }
  if (req.url === '/release') { held.end('slow done'); res.end('released'); return; }
  res.end('fast');
});
server.listen(Number(process.env.PORT));
server.on('close', () => console.log('app saw close'));
process.on('exit', (code) => console.log('exit ' + code));
`

func TestNodeGracefulStop(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			port := holdPort(t)
			l := listenTCP(t)
			env := []string{"PORT=" + strconv.Itoa(port)}
			if sig != syscall.SIGTERM {
				env = append(env, "KEEL_STOP_SIGNAL=SIGINT")
			}
			app := startNode(t, nodeOpts{script: slowApp, env: env, listen: serveOn(port, l, nil)})
			app.event(t, EventListening)
			addr := l.LocalAddr().String()

			kept := dialRaw(t, addr) // will send a request after the signal
			kept.send(t, "/fast")
			if resp, body := kept.response(t); body != "fast" || resp.Close {
				t.Fatalf("before the stop: %q close=%v", body, resp.Close)
			}
			idle := dialRaw(t, addr) // stays idle
			idle.send(t, "/fast")
			idle.response(t)
			inflight := dialRaw(t, addr)
			inflight.send(t, "/slow")
			if ev := app.event(t, EventMessage); string(ev.Message) != `"slow started"` {
				t.Fatalf("message %s", ev.Message)
			}

			app.signal(t, sig)
			app.event(t, EventStopping)

			// A later request on a kept-alive connection is answered, with
			// Connection: close.
			kept.send(t, "/release")
			resp, body := kept.response(t)
			// (resp.Close is Connection: close; net/http strips the header.)
			if body != "released" || !resp.Close {
				t.Fatalf("after the stop: %q close=%v", body, resp.Close)
			}
			kept.closedByServer(t)
			// The request in flight completes, with Connection: close.
			resp, body = inflight.response(t)
			if resp.StatusCode != 200 || body != "slow done" || !resp.Close {
				t.Fatalf("in flight: %d %q close=%v", resp.StatusCode, body, resp.Close)
			}
			inflight.closedByServer(t)
			// The idle connection is closed.
			idle.closedByServer(t)

			if code, s := app.wait(t); code != 0 || s != 0 {
				t.Fatalf("exit %d %v, want 0", code, s)
			}
			app.stdout.waitFor(t, "app saw close\nexit 0")
			// The socket is keel's: it is still open and queues connections.
			c, err := net.DialTimeout("tcp", addr, waitLimit)
			if err != nil {
				t.Fatalf("keel's socket refused a connection after the app stopped: %v", err)
			}
			c.Close()
		})
	}
}

func TestNodeAppKeepsItsOwnStopHandler(t *testing.T) {
	port := holdPort(t)
	l := listenTCP(t)
	app := startNode(t, nodeOpts{
		script: `
process.on('SIGTERM', () => console.log('app handles SIGTERM'));
require('http').createServer((req, res) => res.end('still here')).listen(Number(process.env.PORT));
`,
		env:    []string{"PORT=" + strconv.Itoa(port)},
		listen: serveOn(port, l, nil),
	})
	app.event(t, EventListening)
	app.signal(t, syscall.SIGTERM)
	app.stdout.waitFor(t, "app handles SIGTERM")
	if _, body, _ := httpGet(t, l.LocalAddr().String(), "/"); body != "still here" {
		t.Fatalf("body %q", body)
	}
	select {
	case ev := <-app.events:
		if ev.Kind == EventStopping {
			t.Fatal("the preload started stopping although the app handles SIGTERM")
		}
	default:
	}
}

func TestNodeStopSignalAfterServersClosedKillsAsUsual(t *testing.T) {
	app := startNode(t, nodeOpts{script: `
const server = require('http').createServer().listen(0, () => {
  server.close(() => { console.log('closed'); });
});
setInterval(() => {}, 1000); // other work keeps the app alive
`})
	app.event(t, EventListening)
	app.stdout.waitFor(t, "closed")
	app.signal(t, syscall.SIGTERM)
	if code, sig := app.wait(t); sig != syscall.SIGTERM {
		t.Fatalf("exit %d %v, want death by SIGTERM as without keel", code, sig)
	}
}

// runPlain runs script under node without keel and returns its status and
// stderr.
func runPlain(t *testing.T, dir, script string, env ...string) (int, string) {
	t.Helper()
	node := requireNode(t)
	path := filepath.Join(dir, "app.js")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, path)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func TestNodeErrorsAreNotSwallowed(t *testing.T) {
	cases := map[string]string{
		"uncaught exception": `
const server = require('http').createServer();
server.listen(Number(process.env.PORT), () => {
  setTimeout(function boom() { throw new Error('boom from the app'); }, 0);
});
`,
		"unhandled rejection": `
const server = require('http').createServer();
server.listen(Number(process.env.PORT), () => {
  Promise.reject(new Error('rejected by the app'));
});
`,
	}
	for name, script := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			wantCode, wantStderr := runPlain(t, dir, script, "PORT=0")
			if wantCode == 0 {
				t.Fatalf("plain node exited 0; stderr:\n%s", wantStderr)
			}
			port := holdPort(t)
			l := listenTCP(t)
			app := startNode(t, nodeOpts{
				dir:    dir,
				script: script,
				env:    []string{"PORT=" + strconv.Itoa(port)},
				listen: serveOn(port, l, nil),
			})
			code, sig := app.wait(t)
			if code != wantCode || sig != 0 {
				t.Fatalf("exit %d %v under keel, %d without", code, sig, wantCode)
			}
			if got := app.stderr.String(); got != wantStderr {
				t.Fatalf("stderr under keel:\n%s\nwithout keel:\n%s", got, wantStderr)
			}
		})
	}
}

func TestNodeListenErrorFromKeel(t *testing.T) {
	refuse := func(ctx context.Context, req ListenRequest) (*os.File, error) {
		return nil, fmt.Errorf("keel: port %d: %w", req.Port, syscall.EADDRINUSE)
	}
	app := startNode(t, nodeOpts{script: `
const server = require('http').createServer();
server.on('error', (e) => {
  console.log('error ' + e.code + ' ' + e.syscall + ' ' + e.port + ' ' + e.message);
  process.exitCode = 3;
});
server.listen(4321);
`, listen: refuse})
	if code, _ := app.wait(t); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	app.stdout.waitFor(t, "error EADDRINUSE listen 4321 listen EADDRINUSE: keel: port 4321: address already in use :::4321")

	// Without an 'error' listener, the app dies as Node's would.
	crash := startNode(t, nodeOpts{script: `require('http').createServer().listen(4321);`, listen: refuse})
	if code, _ := crash.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	crash.stderr.waitFor(t, "Error: listen EADDRINUSE")
}

func TestNodeBindsItselfWhenKeelSaysSo(t *testing.T) {
	app := startNode(t, nodeOpts{script: `
const server = require('http').createServer((req, res) => res.end('self'));
server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
`, listen: func(ctx context.Context, req ListenRequest) (*os.File, error) { return nil, nil }})
	ev := app.event(t, EventListening)
	if ev.Listening.Keel || ev.Listening.Port == 0 || ev.Listening.ID == 0 {
		t.Fatalf("listening %+v, want a port the app bound itself", ev.Listening)
	}
	app.stdout.waitFor(t, fmt.Sprintf("port %d", ev.Listening.Port))
	if _, body, _ := httpGet(t, fmt.Sprintf("127.0.0.1:%d", ev.Listening.Port), "/"); body != "self" {
		t.Fatalf("body %q", body)
	}
}

func TestNodeListenForms(t *testing.T) {
	p1, p2, p3 := holdPort(t), holdPort(t), holdPort(t)
	l1, l2, l3 := listenTCP(t), listenTCP(t), listenTCP(t)
	reqs := make(chan ListenRequest, 8)
	byPort := map[int]*sockets.Listener{p1: l1, p2: l2, p3: l3}
	dir := t.TempDir()
	sock := filepath.Join(dir, "app.sock")
	app := startNode(t, nodeOpts{
		dir: dir,
		script: `
const http = require('http');
const net = require('net');
const [p1, p2, p3] = process.env.PORTS.split(',').map(Number);
const mk = (name) => http.createServer((req, res) => res.end(name));
const report = (name, s) => () => console.log(name + ' ' + JSON.stringify(s.address()));
const s1 = mk('s1'); s1.listen(p1); s1.on('listening', report('s1', s1));
const s2 = mk('s2'); s2.listen({ port: p2, host: '127.0.0.1' }, report('s2', s2));
const s3 = mk('s3'); s3.listen(String(p3), 'localhost', 100, report('s3', s3));
const s4 = mk('s4'); s4.listen(process.env.SOCK, report('s4', s4));
// Node's own argument errors are still thrown synchronously.
try { mk('bad').listen(70000); } catch (e) { console.log('bad ' + e.code); }
`,
		env: []string{fmt.Sprintf("PORTS=%d,%d,%d", p1, p2, p3), "SOCK=" + sock},
		listen: func(ctx context.Context, req ListenRequest) (*os.File, error) {
			reqs <- req
			return byPort[req.Port].File(), nil
		},
	})
	for i := 0; i < 4; i++ {
		app.event(t, EventListening)
	}
	app.stdout.waitFor(t, "bad ERR_SOCKET_BAD_PORT")
	got := map[int]ListenRequest{}
	for i := 0; i < 3; i++ {
		r := <-reqs
		got[r.Port] = r
	}
	if r := got[p2]; r.Host != "127.0.0.1" || r.Backlog != 0 {
		t.Errorf("listen({port, host}) asked %+v", r)
	}
	if r := got[p3]; r.Host != "localhost" || r.Backlog != 100 {
		t.Errorf("listen(port, host, backlog) asked %+v", r)
	}
	for name, l := range map[string]*sockets.Listener{"s1": l1, "s2": l2, "s3": l3} {
		app.stdout.waitFor(t, fmt.Sprintf(`%s {"address":"127.0.0.1","family":"IPv4","port":%d}`, name, l.LocalAddr().(*net.TCPAddr).Port))
		if _, body, _ := httpGet(t, l.LocalAddr().String(), "/"); body != name {
			t.Errorf("%s's socket served %q", name, body)
		}
	}
	// The path listen passed through: node bound the unix socket itself.
	app.stdout.waitFor(t, fmt.Sprintf(`s4 %q`, sock))
	c := &http.Client{Timeout: waitLimit, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://unix/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "s4" {
		t.Fatalf("unix socket served %q", b)
	}
}

func TestNodeFDListenPassesThrough(t *testing.T) {
	l := listenTCP(t)
	reqs := make(chan ListenRequest, 1)
	app := startNode(t, nodeOpts{
		script: `
const server = require('http').createServer((req, res) => res.end('fd'));
server.listen({ fd: 4 }, () => console.log('on fd 4'));
`,
		extra:  []*os.File{l.File()},
		listen: serveOn(-1, nil, reqs),
	})
	ev := app.event(t, EventListening)
	if ev.Listening.Keel || ev.Listening.ID != 0 || ev.Listening.Port != l.LocalAddr().(*net.TCPAddr).Port {
		t.Fatalf("listening %+v", ev.Listening)
	}
	app.stdout.waitFor(t, "on fd 4")
	if _, body, _ := httpGet(t, l.LocalAddr().String(), "/"); body != "fd" {
		t.Fatalf("body %q", body)
	}
	select {
	case r := <-reqs:
		t.Fatalf("keel was asked %+v for an fd listen", r)
	default:
	}
}

func TestNodeBindsItselfWhenKeelGoesAway(t *testing.T) {
	asked := make(chan struct{})
	app := startNode(t, nodeOpts{
		script: `
const server = require('http').createServer((req, res) => res.end('alone'));
server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port + ';'));
`,
		listen: func(ctx context.Context, req ListenRequest) (*os.File, error) {
			close(asked)
			<-ctx.Done() // never answers
			return nil, ctx.Err()
		},
	})
	<-asked
	app.cancel()
	<-app.served
	app.served <- nil // for the cleanup
	app.conn.Close()
	out := app.stdout.waitFor(t, ";")
	var port int
	if _, err := fmt.Sscanf(out, "port %d;", &port); err != nil || port == 0 {
		t.Fatalf("output %q", out)
	}
	if _, body, _ := httpGet(t, fmt.Sprintf("127.0.0.1:%d", port), "/"); body != "alone" {
		t.Fatalf("body %q", body)
	}
}

func TestNodeWithoutKeelThePreloadIsInert(t *testing.T) {
	script := `
const server = require('http').createServer();
server.listen(0, '127.0.0.1', () => {
  console.log('bound ' + server.address().port + ' send=' + typeof process.send + ' marker=' + process.env.KEEL_NODE_IPC);
  server.close();
});
`
	app := startNode(t, nodeOpts{script: script, noChannel: true})
	if code, _ := app.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	app.stdout.waitFor(t, "send=undefined marker=undefined")

	// The marker without a channel: still nothing.
	app = startNode(t, nodeOpts{script: script, noChannel: true, env: []string{"KEEL_NODE_IPC=1"}})
	if code, _ := app.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	app.stdout.waitFor(t, "send=undefined marker=1")
}

func TestNodeForkedChildDoesNotTalkToKeel(t *testing.T) {
	dir := t.TempDir()
	child := `
const s = require('net').createServer();
s.listen(0, '127.0.0.1', () => { process.send({ childPort: s.address().port, marker: process.env.KEEL_NODE_IPC || null }); s.close(); });
`
	if err := os.WriteFile(filepath.Join(dir, "child.js"), []byte(child), 0o644); err != nil {
		t.Fatal(err)
	}
	reqs := make(chan ListenRequest, 4)
	app := startNode(t, nodeOpts{
		dir: dir,
		script: `
const { fork } = require('child_process');
console.log('execArgv ' + process.execArgv.join(' '));
const c = fork(__dirname + '/child.js'); // inherits --require
c.on('message', (m) => { console.log('child said ' + JSON.stringify(m)); c.disconnect(); });
`,
		listen: func(ctx context.Context, req ListenRequest) (*os.File, error) {
			reqs <- req
			return nil, nil
		},
	})
	app.stdout.waitFor(t, "execArgv --require")
	app.stdout.waitFor(t, `"marker":null}`)
	if code, _ := app.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	select {
	case r := <-reqs:
		t.Fatalf("keel was asked %+v by the app's child", r)
	default:
	}
}

func TestNodeLogLinesSurviveExit(t *testing.T) {
	const lines = 200000
	script := fmt.Sprintf(`
if (process.send) process.send('writing');
for (let i = 0; i < %d; i++) console.log('line ' + i);
process.exit(0);
`, lines)
	run := func(noChannel bool) int {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		app := startNode(t, nodeOpts{script: script, noChannel: noChannel, stdout: w})
		w.Close()
		if !noChannel {
			app.event(t, EventMessage)
		}
		// A reader that falls behind: nothing is read until the app has
		// exited or a moment has passed. A non-blocking stdout queues the
		// lines in memory, and process.exit drops the queue.
		select {
		case <-app.exited:
		case <-time.After(300 * time.Millisecond):
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := app.wait(t); code != 0 {
			t.Fatalf("exit %d", code)
		}
		return bytes.Count(out, []byte("\n"))
	}
	if n := run(false); n != lines {
		t.Fatalf("under keel: got %d lines, want %d", n, lines)
	}
	t.Logf("for comparison, without keel's preload: %d of %d lines", run(true), lines)
}

// Two instances share a socket, each with a kept-alive connection; new
// connections come and go. With a blocking socket, the instance that
// loses the race for a new connection blocks its event loop in accept(2)
// until the next one arrives, and its kept-alive connection stalls. The
// handler hands Node a non-blocking socket, so neither ever stalls.
func TestNodeKeptAliveConnectionsNeverStall(t *testing.T) {
	port := holdPort(t)
	l := listenTCP(t)
	for i := 0; i < 2; i++ {
		app := startNode(t, nodeOpts{
			script: helloApp,
			env:    []string{"PORT=" + strconv.Itoa(port)},
			listen: serveOn(port, l, nil),
		})
		app.event(t, EventListening)
	}
	addr := l.LocalAddr().String()
	// One kept-alive connection to each instance.
	kept := map[string]*keptConn{}
	limit := time.Now().Add(waitLimit)
	for len(kept) < 2 {
		if time.Now().After(limit) {
			t.Fatalf("kept-alive connections reach only %d instances", len(kept))
		}
		c := dialKept(t, addr)
		body := c.get(t)
		if kept[body] == nil {
			kept[body] = c
		} else {
			c.close()
		}
	}
	defer func() {
		for _, c := range kept {
			c.close()
		}
	}()
	for round := 0; round < 20; round++ {
		httpGet(t, addr, "/")
		for who, c := range kept {
			if body := c.get(t); body != who {
				t.Fatalf("kept-alive connection to %q answered by %q", who, body)
			}
		}
	}
}

// keptConn is a kept-alive HTTP/1.1 connection whose requests must be
// answered within a few seconds.
type keptConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKept(t *testing.T, addr string) *keptConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return &keptConn{c: c, br: bufio.NewReader(c)}
}

func (k *keptConn) get(t *testing.T) string {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := k.c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		t.Fatalf("a kept-alive connection stalled: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (k *keptConn) close() { k.c.Close() }
