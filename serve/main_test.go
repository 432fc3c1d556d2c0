package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"go.uber.org/goleak"
)

// The test binary doubles as the child process of the socket-activation
// tests: TestMain runs the helper named by this variable instead of the
// tests.
const helperEnv = "SERVE_TEST_HELPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		helper, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(helper())
	}
	goleak.VerifyTestMain(m)
}

var helpers = map[string]func() int{
	"server":    helperServer,
	"listeners": helperListeners,
	"systemd":   helperSystemdListeners,
}

// setListenPID sets LISTEN_PID to this process's pid when asked: os/exec
// cannot know a child's pid before it starts, so the child does it, as
// keel's own pre-exec step does.
func setListenPID() {
	if os.Getenv("SERVE_TEST_SET_PID") == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
}

// helperServer serves under Run (real signals) with the policy, timeout and
// names from the environment, and reports how it ended on stdout.
func helperServer() int {
	setListenPID()
	opts := Options{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil)), Addr: os.Getenv("SERVE_TEST_ADDR")}
	if os.Getenv("SERVE_TEST_POLICY") == "drain" {
		opts.OnPanic = DrainAndExit
	}
	if d := os.Getenv("SERVE_TEST_TIMEOUT"); d != "" {
		opts.ShutdownTimeout, _ = time.ParseDuration(d)
	} else {
		opts.ShutdownTimeout = time.Minute // never reached: the tests finish requests
	}
	if names := os.Getenv("SERVE_TEST_NAMES"); names != "" {
		opts.Names = strings.Split(names, ",")
	}

	var stdout sync.Mutex
	say := func(s string) {
		stdout.Lock()
		defer stdout.Unlock()
		fmt.Println(s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %d", os.Getpid())
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "LISTEN_PID=%q LISTEN_FDS=%q LISTEN_FDNAMES=%q",
			os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		say("inflight")
		b, err := io.ReadAll(r.Body) // until the test closes its end
		if err != nil {
			return
		}
		fmt.Fprintf(w, "done:%d", len(b))
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		panic("helper handler bug")
	})
	err := Run(&http.Server{Handler: mux}, opts)
	if err != nil {
		say(fmt.Sprintf("exit-error: panicked=%v: %v", errors.Is(err, ErrPanicked), err))
		return 1
	}
	say("exit-clean")
	return 0
}

// helperListeners prints what Listeners returns, one "name addr" a line,
// then the LISTEN_* environment left behind.
func helperListeners() int {
	setListenPID()
	lns, err := Listeners()
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	for _, l := range lns {
		fmt.Println(l.Name, l.Addr())
		l.Close()
	}
	fmt.Printf("env %q %q %q\n", os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	return 0
}

// helperSystemdListeners prints the same as helperListeners, through
// go-systemd's activation package, as a cross-check.
func helperSystemdListeners() int {
	setListenPID()
	byName, err := activation.ListenersWithNames()
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	var lines []string
	for name, lns := range byName {
		for _, l := range lns {
			if strings.HasPrefix(name, "LISTEN_FD_") {
				name = ""
			}
			lines = append(lines, fmt.Sprintf("%s %s", name, l.Addr()))
			l.Close()
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Printf("env %q %q %q\n", os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	return 0
}

// waitFor bounds every wait in these tests.
const waitFor = 20 * time.Second

// child is a helper process.
type child struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line
	stderr *lockedBuffer
	done   chan struct{} // closed when the process has been waited for
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lineWriter sends each complete line written to it on c.
type lineWriter struct {
	c    chan string
	part []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.c <- string(w.part[:i])
		w.part = w.part[i+1:]
	}
}

// startChild runs helper in a child process with env added to a clean copy
// of this process's environment and files as fds 3, 4, ….
func startChild(t *testing.T, helper string, env []string, files ...*os.File) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"="+helper, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	c := &child{cmd: cmd, lines: make(chan string, 100), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = &lineWriter{c: c.lines}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", c.stderr)
		}
	})
	return c
}

// waitLine waits for the child to print a line starting with prefix and
// returns it.
func (c *child) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-c.done:
			// Drain what it printed before exiting.
			for {
				select {
				case l := <-c.lines:
					if strings.HasPrefix(l, prefix) {
						return l
					}
				default:
					t.Fatalf("child exited (%v) without printing %q", c.cmd.ProcessState, prefix)
				}
			}
		case <-deadline:
			t.Fatalf("child did not print %q in time", prefix)
		}
	}
}

// wait waits for the child to exit and returns its exit code.
func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(waitFor):
		t.Fatal("child did not exit in time")
		return -1
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// notifySocket listens on a unixgram socket like keel's sdnotify server:
// an abstract one ("@…") or one in a temporary directory.
func notifySocket(t *testing.T, abstract bool) (string, *net.UnixConn) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		name = fmt.Sprintf("@keel-serve-test-%d-%x", os.Getpid(), rand.Uint64())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return name, conn
}

// waitState reads datagrams until one has the line want, and returns that
// datagram's lines as a map.
func waitState(t *testing.T, conn *net.UnixConn, want string) map[string]string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %q on the notify socket: %v", want, err)
		}
		m := map[string]string{}
		hit := false
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			k, v, _ := strings.Cut(line, "=")
			m[k] = v
			hit = hit || line == want
		}
		if hit {
			return m
		}
	}
}

// listenTCP makes a listening socket the way keel's sockets package does,
// and returns it with a duplicate *os.File to pass to a child.
func listenTCP(t *testing.T) (net.Listener, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		f.Close()
	})
	return ln, f
}

// newClient returns a client whose connections are closed at cleanup.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitFor}
}

func getBody(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// slowRequest starts a POST /slow whose body stays open until the returned
// function is called with the rest of it; the result arrives on the channel.
type slowResult struct {
	status int
	body   string
	err    error
}

func slowRequest(t *testing.T, c *http.Client, base string) (finish func(string), result <-chan slowResult) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(context.Background(), "POST", base+"/slow", pr)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan slowResult, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			res <- slowResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- slowResult{resp.StatusCode, string(b), err}
	}()
	var once sync.Once
	finish = func(rest string) {
		once.Do(func() {
			if rest != "" {
				io.WriteString(pw, rest)
			}
			pw.Close()
		})
	}
	t.Cleanup(func() { finish("") })
	return finish, res
}

func waitResult(t *testing.T, res <-chan slowResult) slowResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(waitFor):
		t.Fatal("the in-flight request did not finish")
		return slowResult{}
	}
}
