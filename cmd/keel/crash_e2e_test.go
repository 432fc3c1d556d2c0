package main

// End-to-end tests of graceful crash: an unmodified Node server whose
// request throws (or rejects) outside any handler of its own.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/poll"
)

// crashyServer is unmodified: /slow answers after SLOW_MS, /hold/NAME once
// the file HOLD_DIR/NAME exists, /throw throws in a timer, /reject leaves a
// rejection unhandled, /throw-twice throws twice 300 ms apart.
const crashyServer = `const http = require('http');
http.createServer((req, res) => {
  res.setHeader('X-Pid', process.pid);
  if (req.url.startsWith('/hold/')) {
    const file = require('path').join(process.env.HOLD_DIR, req.url.slice(6));
    const t = setInterval(() => {
      if (require('fs').existsSync(file)) { clearInterval(t); res.end('held done'); }
    }, 20);
    return;
  }
  switch (req.url) {
  case '/slow': setTimeout(() => res.end('slow done'), Number(process.env.SLOW_MS)); return;
  case '/throw': setTimeout(function explode() { throw new TypeError('cannot read the widget'); }, 5); return;
  case '/reject': setTimeout(() => { Promise.reject(new RangeError('widget out of range')); }, 5); return;
  case '/throw-twice':
    setTimeout(() => { throw new Error('first'); }, 5);
    setTimeout(() => { throw new Error('second'); }, 300);
    return;
  }
  res.end('pid ' + process.pid);
}).listen(process.env.PORT, () => console.log('listening'));
`

// rawGet sends one request on a new connection; its answer (or the error
// that ended the connection) arrives on the returned channel.
type answer struct {
	status int
	body   string
	pid    string
	close  bool
	err    error
}

func rawGet(t *testing.T, port int, path string) <-chan answer {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: keel\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	ch := make(chan answer, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- answer{status: resp.StatusCode, body: string(b), pid: resp.Header.Get("X-Pid"), close: resp.Close, err: err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(40 * time.Second):
		t.Fatal("no answer")
		return answer{}
	}
}

// startCrashy starts crashyServer as app name with one instance and waits
// until it serves; it returns the port and the pid.
func startCrashy(t *testing.T, e *env, name, path string, slow time.Duration, flags ...string) (int, int) {
	t.Helper()
	port := freePort(t)
	args := append([]string{"start", path, "--name", name, "--env", "PORT=" + strconv.Itoa(port),
		"--env", "SLOW_MS=" + strconv.FormatInt(slow.Milliseconds(), 10), "--kill-timeout", "20s", "--ready", "listen"}, flags...)
	e.ok(args...)
	l := e.waitFor("online", allStatus(name, 1, "online"))
	return port, l[0].Pid
}

func instanceOf(t *testing.T, e *env, app string) api.Instance {
	t.Helper()
	for _, in := range e.ls() {
		if in.App == app {
			return in
		}
	}
	t.Fatalf("no instance of %s", app)
	return api.Instance{}
}

// crashGroups waits until app has n crashes recorded and returns its groups.
func crashGroups(t *testing.T, e *env, app string, n int) []api.CrashGroup {
	t.Helper()
	var groups []api.CrashGroup
	poll.Until(t, 20*time.Second, fmt.Sprintf("%d crashes of %s", n, app), func() bool {
		if err := jsonUnmarshal(e.ok("crashes", app, "--json"), &groups); err != nil {
			t.Fatal(err)
		}
		c := 0
		for _, g := range groups {
			c += g.Count
		}
		return c >= n
	})
	return groups
}

// TestNodeGracefulCrash: one request throws (then, on the replacement, one
// rejects). The request in flight on the crashing process completes, the
// crashing request gets a 500, new connections are served by the
// replacement, which keel started before the old process exited, and the
// crash is filed in `keel crashes` exactly as without graceful crash.
func TestNodeGracefulCrash(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	path := script(t, "crashy.js", crashyServer)
	hold := t.TempDir()
	port, pid := startCrashy(t, e, "crashy", path, time.Second, "--env", "HOLD_DIR="+hold)

	for i, route := range []string{"/throw", "/reject"} {
		// A request in flight until the test lets it finish, however long
		// the replacement takes to start on a busy machine.
		name := strconv.Itoa(i)
		held := rawGet(t, port, "/hold/"+name)
		// The held request is in (its process answers a later one).
		if a := wait(t, rawGet(t, port, "/")); a.status != 200 || a.pid != strconv.Itoa(pid) {
			t.Fatalf("before the crash: %+v", a)
		}
		crash := wait(t, rawGet(t, port, route))
		if crash.err != nil || crash.status != 500 || !crash.close {
			t.Fatalf("%s: %+v, want a 500 with Connection: close", route, crash)
		}
		// The replacement serves new connections while the old process
		// still drains.
		var next api.Instance
		poll.Until(t, 20*time.Second, "the replacement to serve", func() bool {
			next = instanceOf(t, e, "crashy")
			return next.Status == "online" && next.Pid != pid
		})
		if next.Restarts != i+1 {
			t.Fatalf("restarts %d, want %d", next.Restarts, i+1)
		}
		if a := wait(t, rawGet(t, port, "/")); a.status != 200 || a.pid != strconv.Itoa(next.Pid) {
			t.Fatalf("after the crash: %+v, want the replacement %d", a, next.Pid)
		}
		if !alive(pid) {
			t.Fatalf("the crashed process %d is gone with a request in flight", pid)
		}
		release(t, hold, name)
		if a := wait(t, held); a.err != nil || a.status != 200 || a.body != "held done" || a.pid != strconv.Itoa(pid) {
			t.Fatalf("the request in flight: %+v", a)
		}
		poll.Until(t, 20*time.Second, "the crashed process to exit", func() bool { return !alive(pid) })
		pid = next.Pid
	}

	// The exits are crashes: code 1, one group each, of the kinds they
	// have without graceful crash.
	det := e.describe("crashy")
	if len(det.Exits) != 2 {
		t.Fatalf("exits %+v", det.Exits)
	}
	for _, x := range det.Exits {
		if x.Exit.Code == nil || *x.Exit.Code != 1 || x.Exit.Reason != "" {
			t.Fatalf("exit %+v, want a crash with code 1", x)
		}
	}
	groups := crashGroups(t, e, "crashy", 2)
	plain := plainCrashGroups(t, e, path)
	if len(groups) != 2 || len(plain) != 2 {
		t.Fatalf("groups %+v, without graceful crash %+v", groups, plain)
	}
	for _, g := range groups {
		found := false
		for _, p := range plain {
			found = found || p.Signature == g.Signature && p.Title == g.Title
		}
		if !found {
			t.Errorf("group %+v has no twin without graceful crash: %+v", g, plain)
		}
	}
}

// release lets crashyServer's /hold/name requests finish.
func release(t *testing.T, hold, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(hold, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNodeGracefulCrashWhileTheOldOneDrains: the replacement of a process
// that crashed gracefully crashes too, with another error, while the first
// still drains a request. Both write to the same log files, and the first
// exits last; each crash is still filed under its own error.
func TestNodeGracefulCrashWhileTheOldOneDrains(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	hold := t.TempDir()
	port, first := startCrashy(t, e, "crashy", script(t, "crashy.js", crashyServer), time.Second, "--env", "HOLD_DIR="+hold)

	held := rawGet(t, port, "/hold/first")
	if a := wait(t, rawGet(t, port, "/")); a.status != 200 || a.pid != strconv.Itoa(first) {
		t.Fatalf("before the crash: %+v", a)
	}
	if a := wait(t, rawGet(t, port, "/throw")); a.status != 500 {
		t.Fatalf("/throw: %+v, want a 500", a)
	}
	var second api.Instance
	poll.Until(t, 20*time.Second, "the replacement to serve", func() bool {
		second = instanceOf(t, e, "crashy")
		return second.Status == "online" && second.Pid != first
	})
	if a := wait(t, rawGet(t, port, "/reject")); a.status != 500 {
		t.Fatalf("/reject on the replacement: %+v, want a 500", a)
	}
	// The replacement had nothing else in flight: it is gone and its crash
	// filed (its error is in the shared log) while the first one drains.
	poll.Until(t, 20*time.Second, "the replacement to exit", func() bool { return !alive(second.Pid) })
	crashGroups(t, e, "crashy", 1)
	if !alive(first) {
		t.Fatalf("the first process %d is gone with a request in flight", first)
	}
	release(t, hold, "first")
	if a := wait(t, held); a.status != 200 || a.body != "held done" || a.pid != strconv.Itoa(first) {
		t.Fatalf("the request in flight: %+v", a)
	}
	poll.Until(t, 20*time.Second, "the first process to exit", func() bool { return !alive(first) })

	groups := crashGroups(t, e, "crashy", 2)
	want := map[string]int{"TypeError: cannot read the widget": first, "RangeError: widget out of range": second.Pid}
	if len(groups) != len(want) {
		t.Fatalf("%d groups, want one for each error: %+v", len(groups), groups)
	}
	for _, g := range groups {
		pid, ok := 0, false
		for title, p := range want {
			if strings.Contains(g.Title, title) {
				pid, ok = p, true
			}
		}
		var det api.CrashDetail
		if err := jsonUnmarshal(e.ok("crash", g.ID, "--json"), &det); err != nil {
			t.Fatal(err)
		}
		if !ok || g.Count != 1 || len(det.Exits) != 1 || det.Exits[0].Pid != pid {
			t.Errorf("group %q: count %d, exits %+v; want one exit, of pid %d", g.Title, g.Count, det.Exits, pid)
		}
	}
}

// plainCrashGroups crashes the same script with graceful_crash: false (a
// config file's key) and returns its crash groups.
func plainCrashGroups(t *testing.T, e *env, path string) []api.CrashGroup {
	t.Helper()
	port := freePort(t)
	cfg := filepath.Join(t.TempDir(), "keel.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: plain
    script: %s
    graceful_crash: false
    ready: listen
    env:
      PORT: "%d"
      SLOW_MS: "100"
`, path, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("start", cfg)
	for i, route := range []string{"/throw", "/reject"} {
		e.waitFor("plain online", allStatus("plain", 1, "online"))
		if a := wait(t, rawGet(t, port, route)); a.err == nil {
			t.Fatalf("%s without graceful crash: %+v, want the connection cut", route, a)
		}
		crashGroups(t, e, "plain", i+1)
	}
	return crashGroups(t, e, "plain", 2)
}

// TestNodeGracefulCrashOff: with --graceful-crash=false a fatal error ends
// the process at once, as without keel: the request in flight fails.
func TestNodeGracefulCrashOff(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	port, pid := startCrashy(t, e, "crashy", script(t, "crashy.js", crashyServer), 20*time.Second, "--graceful-crash=false")
	if sp := e.describe("crashy").Spec; sp.GracefulCrash == nil || *sp.GracefulCrash {
		t.Fatalf("graceful_crash %v", sp.GracefulCrash)
	}
	slow := rawGet(t, port, "/slow")
	wait(t, rawGet(t, port, "/"))
	if a := wait(t, rawGet(t, port, "/throw")); a.err == nil {
		t.Fatalf("the crashing request: %+v, want the connection cut", a)
	}
	if a := wait(t, slow); a.err == nil {
		t.Fatalf("the request in flight: %+v, want it cut off with its process", a)
	}
	if alive(pid) {
		t.Fatalf("pid %d still runs", pid)
	}
}

// TestNodeSecondExceptionDuringDrainExitsAtOnce: a fatal error during the
// drain ends the process at once (the request in flight fails), still as a
// crash with code 1.
func TestNodeSecondExceptionDuringDrainExitsAtOnce(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	port, pid := startCrashy(t, e, "crashy", script(t, "crashy.js", crashyServer), 20*time.Second)
	slow := rawGet(t, port, "/slow")
	wait(t, rawGet(t, port, "/"))
	start := time.Now()
	if a := wait(t, rawGet(t, port, "/throw-twice")); a.status != 500 {
		t.Fatalf("the crashing request: %+v, want 500", a)
	}
	if a := wait(t, slow); a.err == nil {
		t.Fatalf("the request in flight: %+v, want it cut off by the second error", a)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the process lived %s: it waited for the drain", d)
	}
	poll.Until(t, 20*time.Second, "the crashed process to exit", func() bool { return !alive(pid) })
	det := e.describe("crashy")
	if len(det.Exits) != 1 || det.Exits[0].Exit.Code == nil || *det.Exits[0].Exit.Code != 1 {
		t.Fatalf("exits %+v, want one with code 1", det.Exits)
	}
	logs := e.ok("logs", "crashy", "--raw", "--err", "--lines", "100")
	if !strings.Contains(logs, "Error: first") || !strings.Contains(logs, "Error: second") {
		t.Fatalf("stderr:\n%s", logs)
	}
	// Filed under the error that ended the process without graceful
	// crash, not the one that cut its drain short.
	if g := crashGroups(t, e, "crashy", 1); len(g) != 1 || g[0].Title != "Error: first" {
		t.Fatalf("crash groups %+v, want one, of the first error", g)
	}
}

// TestNodeOwnUncaughtHandlerIsRespected: while the app has its own
// 'uncaughtException' listener it keeps full control (the process lives
// on, its request unanswered); once the listener is gone the next error is
// a graceful crash.
func TestNodeOwnUncaughtHandlerIsRespected(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	src := crashyServer + `process.once('uncaughtException', (err) => console.log('the app handled: ' + err.message));
`
	port, pid := startCrashy(t, e, "crashy", script(t, "crashy.js", src), 20*time.Second)
	first := rawGet(t, port, "/throw")
	poll.Until(t, 20*time.Second, "the app's handler", func() bool {
		return strings.Contains(e.ok("logs", "crashy", "--raw", "--lines", "20"), "the app handled: cannot read the widget")
	})
	if a := wait(t, rawGet(t, port, "/")); a.status != 200 || a.pid != strconv.Itoa(pid) || a.close {
		t.Fatalf("after the handled error: %+v, want the same process, kept alive", a)
	}
	select {
	case a := <-first:
		t.Fatalf("the request the app dropped was answered: %+v", a)
	default:
	}
	if in := instanceOf(t, e, "crashy"); in.Restarts != 0 || in.Pid != pid {
		t.Fatalf("instance %+v after an error the app handled", in)
	}
	// The listener was a once: this error is Node's to end the process.
	if a := wait(t, rawGet(t, port, "/throw")); a.status != 500 {
		t.Fatalf("the second error's request: %+v, want 500", a)
	}
	poll.Until(t, 20*time.Second, "the restart", func() bool {
		in := instanceOf(t, e, "crashy")
		return in.Restarts == 1 && in.Status == "online"
	})
}
