package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/spec"
)

// peerEnv makes the test binary a client that calls the socket named in it
// and prints what it was answered (see peerChild).
const peerEnv = "KEEL_CONTROL_TEST_PEER"

func TestMain(m *testing.M) {
	if sock := os.Getenv(peerEnv); sock != "" {
		os.Exit(peerChild(sock))
	}
	goleak.VerifyTestMain(m)
}

// peerChild calls GET /v1/list and POST /v1/kill on sock and prints one line
// per answer: the status code and the body.
func peerChild(sock string) int {
	hc := unixClient(sock)
	for _, req := range []struct{ method, path string }{{"GET", "/list"}, {"POST", "/kill"}} {
		r, err := http.NewRequest(req.method, "http://keel"+api.Prefix+req.path, strings.NewReader("{}"))
		if err != nil {
			fmt.Println(err)
			return 1
		}
		resp, err := hc.Do(r)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s", resp.StatusCode, body)
	}
	return 0
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// fakeBackend records every call as one string and answers from its fields.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string
	err   error // returned by every method when set
	list  []api.Instance
	panic bool
	abort bool   // panic with http1.ErrAbortHandler
	kill  func() // run inside Kill, before it returns
}

func (f *fakeBackend) record(format string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	if f.panic {
		panic("boom")
	}
	if f.abort {
		panic(http1.ErrAbortHandler)
	}
	return f.err
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) Apply(_ context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	var names []string
	for _, a := range req.Apps {
		names = append(names, a.Name)
	}
	return api.ApplyResult{}, f.record("Apply %s %s", req.Mode, strings.Join(names, ","))
}

func result(what string) api.Result {
	return api.Result{Message: what, Instances: []api.Instance{{App: "web", Status: "online"}}}
}

func (f *fakeBackend) Start(_ context.Context, apps []*spec.App) (api.Result, error) {
	var names []string
	for _, a := range apps {
		names = append(names, a.Name+"="+strings.Join(a.Argv(), " "))
	}
	return result("started"), f.record("Start %s", strings.Join(names, ","))
}
func (f *fakeBackend) Stop(_ context.Context, t spec.Target) (api.Result, error) {
	return result("stopped"), f.record("Stop %s", t)
}
func (f *fakeBackend) Restart(_ context.Context, t spec.Target) (api.Result, error) {
	return result("restarted"), f.record("Restart %s", t)
}
func (f *fakeBackend) Reload(_ context.Context, t spec.Target) (api.Result, error) {
	return result("reloaded"), f.record("Reload %s", t)
}
func (f *fakeBackend) Scale(_ context.Context, app string, n int) (api.Result, error) {
	return result("scaled"), f.record("Scale %s %d", app, n)
}
func (f *fakeBackend) Delete(_ context.Context, t spec.Target) (api.Result, error) {
	return result("deleted"), f.record("Delete %s", t)
}
func (f *fakeBackend) List(context.Context) ([]api.Instance, error) {
	return f.list, f.record("List")
}
func (f *fakeBackend) Describe(_ context.Context, t spec.Target) ([]api.AppDetail, error) {
	return []api.AppDetail{{Spec: &spec.App{Name: "web", Script: "web.js"}, Desired: "running"}}, f.record("Describe %s", t)
}
func (f *fakeBackend) Crashes(_ context.Context, app string) ([]api.CrashGroup, error) {
	return []api.CrashGroup{{ID: "c1", App: "web", Count: 2}}, f.record("Crashes %q", app)
}
func (f *fakeBackend) Crash(_ context.Context, id string) (api.CrashDetail, error) {
	return api.CrashDetail{CrashGroup: api.CrashGroup{ID: id, App: "web"}, Kind: "go-panic"}, f.record("Crash %s", id)
}
func (f *fakeBackend) Save(context.Context) (api.Result, error) {
	return result("saved"), f.record("Save")
}
func (f *fakeBackend) Resurrect(context.Context) (api.Result, error) {
	return result("resurrected"), f.record("Resurrect")
}
func (f *fakeBackend) Kill(context.Context) (api.Result, error) {
	err := f.record("Kill")
	if f.kill != nil {
		f.kill()
	}
	return result("killed"), err
}
func (f *fakeBackend) Web(_ context.Context, req api.WebRequest) (api.WebInfo, error) {
	return api.WebInfo{Listen: req.Listen, On: !req.Off}, f.record("Web")
}
func (f *fakeBackend) Version() api.Version {
	f.record("Version")
	return api.Version{Version: "v-test", Pid: 42, Home: "/h"}
}

// testLogger writes the server's log into the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

type served struct {
	sock   string
	hc     *http.Client
	cancel context.CancelFunc
	done   chan error
}

// serve runs a Server for b on a fresh socket until the test ends.
func serve(t *testing.T, b Backend) *served {
	t.Helper()
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{sock: sock, hc: unixClient(sock), cancel: cancel, done: make(chan error, 1)}
	srv := NewServer(b, testLogger(t))
	go func() { s.done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		s.hc.CloseIdleConnections()
		cancel()
		s.wait(t)
	})
	return s
}

// wait waits for Serve to return and checks it returned nil.
func (s *served) wait(t *testing.T) {
	t.Helper()
	select {
	case err, ok := <-s.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(s.done)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
}

func (s *served) do(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://keel"+api.Prefix+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return resp.StatusCode, b
}

func TestEndpoints(t *testing.T) {
	b := &fakeBackend{list: []api.Instance{{App: "web", Instance: 1, Pid: 7, Status: "online"}}}
	s := serve(t, b)
	tests := []struct {
		method, path, body string
		call               string
		want               string // a substring of the answer
	}{
		{"POST", "/start", `{"apps":[{"name":"web","script":"web.js","args":["-p","1"]}]}`, "Start web=node web.js -p 1", `"message":"started"`},
		{"POST", "/stop", `{"target":"web:1"}`, "Stop web:1", `"message":"stopped"`},
		{"POST", "/restart", `{"target":"all"}`, "Restart all", `"message":"restarted"`},
		{"POST", "/reload", `{"target":"web"}`, "Reload web", `"message":"reloaded"`},
		{"POST", "/delete", `{"target":"web"}`, "Delete web", `"message":"deleted"`},
		{"POST", "/scale", `{"app":"web","instances":4}`, "Scale web 4", `"message":"scaled"`},
		{"POST", "/save", "", "Save", `"message":"saved"`},
		{"POST", "/resurrect", "", "Resurrect", `"message":"resurrected"`},
		{"POST", "/kill", "", "Kill", `"message":"killed"`},
		{"GET", "/list", "", "List", `[{"app":"web","instance":1,"pid":7,"status":"online","restarts":0,"uptime_ms":0,"memory_bytes":0,"cpu_percent":0,"last_exit":null}]`},
		{"GET", "/describe?target=web:0", "", "Describe web:0", `"desired":"running"`},
		{"GET", "/describe", "", "Describe all", `"spec":{"name":"web"`},
		{"GET", "/crashes", "", `Crashes ""`, `"id":"c1"`},
		{"GET", "/crashes?app=web", "", `Crashes "web"`, `"count":2`},
		{"GET", "/crashes/abc123", "", "Crash abc123", `"kind":"go-panic"`},
		{"GET", "/crashes/a%2Fb", "", "Crash a/b", `"id":"a/b"`},
		{"GET", "/version", "", "Version", `{"version":"v-test","pid":42,"home":"/h"}`},
	}
	for _, tt := range tests {
		before := len(b.Calls())
		code, body := s.do(t, tt.method, tt.path, tt.body)
		if code != http.StatusOK {
			t.Errorf("%s %s: status %d (%s), want 200", tt.method, tt.path, code, body)
			continue
		}
		if !strings.Contains(string(body), tt.want) {
			t.Errorf("%s %s: answer %s does not contain %s", tt.method, tt.path, body, tt.want)
		}
		calls := b.Calls()[before:]
		if len(calls) != 1 || calls[0] != tt.call {
			t.Errorf("%s %s: backend calls %q, want [%q]", tt.method, tt.path, calls, tt.call)
		}
	}
}

func TestEmptyListsAreArrays(t *testing.T) {
	s := serve(t, &fakeBackend{})
	code, body := s.do(t, "GET", "/list", "")
	if code != 200 || string(body) != "[]\n" {
		t.Fatalf("GET /list with no instances: %d %q, want 200 \"[]\\n\"", code, body)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name               string
		err                error
		method, path, body string
		code               int
		msg                string
		called             bool
	}{
		{"not found", &spec.NotFoundError{What: "app web"}, "POST", "/stop", `{"target":"web"}`, 404, "app web not found", true},
		{"wrapped not found", fmt.Errorf("describe: %w", &spec.NotFoundError{What: "app x"}), "GET", "/describe?target=x", "", 404, "describe: app x not found", true},
		{"field error", &spec.FieldError{Field: "ready", Err: errors.New("bad")}, "POST", "/start", `{"apps":[{"name":"a","script":"a"}]}`, 400, "ready: bad", true},
		{"backend failure", errors.New("disk full"), "POST", "/save", "", 500, "disk full", true},
		{"multi-line error", errors.New("line one\nline two\n"), "GET", "/list", "", 500, "line one; line two", true},
		{"bad json", nil, "POST", "/stop", `{"target":`, 400, "reading the request", false},
		{"bad target", nil, "POST", "/restart", `{"target":"no/such"}`, 400, `target "no/such"`, false},
		{"empty target", nil, "POST", "/delete", `{}`, 400, `target ""`, false},
		{"bad describe target", nil, "GET", "/describe?target=a:b", "", 400, "is not a number", false},
		{"no apps", nil, "POST", "/start", `{"apps":[]}`, 400, "no apps to start", false},
		{"null app", nil, "POST", "/start", `{"apps":[null]}`, 400, "app 0 is null", false},
		{"bad scale app", nil, "POST", "/scale", `{"app":"","instances":2}`, 400, "is not an app name", false},
		{"negative scale", nil, "POST", "/scale", `{"app":"web","instances":-1}`, 400, "negative", false},
		{"bad crashes app", nil, "GET", "/crashes?app=a%2Fb", "", 400, "is not an app name", false},
		{"unknown endpoint", nil, "GET", "/nope", "", 404, "no such endpoint: GET /v1/nope", false},
		{"wrong method", nil, "GET", "/stop", "", 405, "method not allowed (want POST)", false},
		{"wrong method on a read", nil, "POST", "/list", "", 405, "method not allowed (want GET)", false},
		{"crash without an id", nil, "GET", "/crashes/", "", 404, "no such endpoint", false},
		{"crash id with a slash", nil, "GET", "/crashes/a/b", "", 404, "no such endpoint", false},
		{"outside the prefix", nil, "GET", "/../list", "", 404, "no such endpoint", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{err: tt.err}
			s := serve(t, b)
			code, body := s.do(t, tt.method, tt.path, tt.body)
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("answer %q is not an api.Error: %v", body, err)
			}
			if code != tt.code || !strings.Contains(e.Error, tt.msg) {
				t.Errorf("got %d %q, want %d with %q", code, e.Error, tt.code, tt.msg)
			}
			if strings.Contains(e.Error, "\n") {
				t.Errorf("error %q spans several lines", e.Error)
			}
			if called := len(b.Calls()) > 0; called != tt.called {
				t.Errorf("backend called: %v (%q), want %v", called, b.Calls(), tt.called)
			}
		})
	}
}

// TestRefusedRequestsAnswerJSON: requests the server will not read are
// answered with an api.Error like every other error, and the connection
// is closed.
func TestRefusedRequestsAnswerJSON(t *testing.T) {
	b := &fakeBackend{}
	s := serve(t, b)
	for _, tc := range []struct {
		req  string
		code int
		msg  string
	}{
		{"POST /v1/stop HTTP/1.1\r\nHost: keel\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"target\":\"all\"}\r\n0\r\n\r\n", 501, "send the body with a Content-Length"},
		{fmt.Sprintf("POST /v1/start HTTP/1.1\r\nHost: keel\r\nContent-Length: %d\r\n\r\n{", maxBody+1), 413, "is over the 8388608 allowed"},
		{"GET /v1/list HTTP/1.1\r\nHost: keel\r\nX: " + strings.Repeat("x", 80<<10) + "\r\n\r\n", 431, "request line and header over"},
		{"GET /v1/list\r\n\r\n", 400, "malformed request line"},
	} {
		c, err := net.Dial("unix", s.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go io.WriteString(c, tc.req) // may fail once the server has answered
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%.30q: %v", tc.req, err)
		}
		body, _ := io.ReadAll(resp.Body)
		var e api.Error
		if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != tc.code || !strings.Contains(e.Error, tc.msg) || !resp.Close {
			t.Errorf("%.30q: %d %s (close %v), want %d with %q and the connection closed", tc.req, resp.StatusCode, body, resp.Close, tc.code, tc.msg)
		}
	}
	if calls := b.Calls(); len(calls) != 0 {
		t.Fatalf("backend called: %q", calls)
	}
}

func TestPanicAnswers500(t *testing.T) {
	s := serve(t, &fakeBackend{panic: true})
	code, body := s.do(t, "POST", "/save", "")
	if code != 500 || !strings.Contains(string(body), "internal error: boom") {
		t.Fatalf("got %d %s, want 500 with the panic value", code, body)
	}
	// The server survives.
	code, _ = s.do(t, "GET", "/crashes/x", "")
	if code != 500 {
		t.Fatalf("second request: %d, want 500 (still panicking)", code)
	}
}

// TestAbortPasses: a deliberate abort closes the connection without an
// answer, as net/http's ErrAbortHandler does.
func TestAbortPasses(t *testing.T) {
	b := &fakeBackend{abort: true}
	s := serve(t, b)
	resp, err := s.hc.Post("http://keel"+api.Prefix+"/save", "application/json", nil)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("an aborted request was answered %s", resp.Status)
	}
	if len(b.Calls()) != 1 {
		t.Fatalf("backend calls %q, want the one that aborted", b.Calls())
	}
}

func TestSocketIsPrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}
}

func TestListenRemovesOnlyStaleSockets(t *testing.T) {
	dir := t.TempDir()

	// A socket file nobody answers on is replaced.
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("stale socket should still exist: %v", err)
	}
	ln, err := Listen(stale)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}

	// A socket something answers on is left alone.
	if _, err := Listen(stale); err == nil || !strings.Contains(err.Error(), "another keel daemon is answering") {
		t.Fatalf("Listen over a live socket: %v, want a refusal", err)
	}
	ln.Close()
	if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("closing the listener should remove the socket: %v", err)
	}

	// Any other file is never removed.
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Listen over a regular file: %v, want a refusal", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "precious" {
		t.Fatalf("regular file was touched: %q %v", b, err)
	}

	long := filepath.Join(dir, strings.Repeat("x", 120))
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "shorter KEEL_HOME") {
		t.Fatalf("Listen on a too long path: %v, want a clear refusal", err)
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b := &fakeBackend{}
	go func() { done <- NewServer(b, testLogger(t)).Serve(ctx, sock) }()
	hc := unixClient(sock)
	defer hc.CloseIdleConnections()
	// Wait for the socket to answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get("http://keel" + api.Prefix + "/version")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Serve returned early: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestServeFailsOnLiveSocket(t *testing.T) {
	s := serve(t, &fakeBackend{})
	err := NewServer(&fakeBackend{}, nil).Serve(context.Background(), s.sock)
	if err == nil || !strings.Contains(err.Error(), "another keel daemon") {
		t.Fatalf("second Serve on the same path: %v, want a refusal", err)
	}
}

// TestKillAnswersBeforeExit is the daemon's kill: the backend cancels the
// server's context from inside Kill; the answer must still arrive whole.
func TestKillAnswersBeforeExit(t *testing.T) {
	b := &fakeBackend{}
	s := serve(t, b)
	b.kill = s.cancel
	code, body := s.do(t, "POST", "/kill", "")
	if code != 200 || !strings.Contains(string(body), `"message":"killed"`) {
		t.Fatalf("kill: %d %s", code, body)
	}
	s.wait(t)
}

// TestForeignUIDRefused runs the test binary as uid 65534 against a socket
// opened to everyone, so that only the peer-credential check stands between
// that process and the backend.
func TestForeignUIDRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child under another uid")
	}
	const nobody = 65534
	b := &fakeBackend{}
	s := serve(t, b)
	dir := filepath.Dir(s.sock)
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(s.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	exe := copyTestBinary(t)

	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+s.sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("peer child: %v\n%s", err, out.String())
	}
	want := `{"error":"keel: uid 65534 may not control the daemon of uid 0"}`
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || lines[0] != "403 "+want || lines[1] != "403 "+want {
		t.Fatalf("child got:\n%s\nwant two lines of: 403 %s", out.String(), want)
	}
	if calls := b.Calls(); len(calls) != 0 {
		t.Fatalf("backend was called for a foreign uid: %q", calls)
	}
	// The owner is still served.
	if code, _ := s.do(t, "GET", "/list", ""); code != 200 {
		t.Fatalf("owner's request after the refusal: %d", code)
	}
}

// copyTestBinary copies the running test binary where any uid may run it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, "control.test")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestRefusesNonUnixPeers serves a TCP listener: the peer of a TCP
// connection cannot be known, so every request is refused.
func TestRefusesNonUnixPeers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b := &fakeBackend{}
	go func() { done <- NewServer(b, testLogger(t)).ServeListener(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + ln.Addr().String() + api.Prefix + "/list")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "cannot tell who is calling") {
		t.Fatalf("got %d %s, want 403", resp.StatusCode, body)
	}
	if len(b.Calls()) != 0 {
		t.Fatalf("backend called: %q", b.Calls())
	}
}
