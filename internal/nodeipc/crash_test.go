package nodeipc

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Graceful crash: the preload with KEEL_GRACEFUL_CRASH_MS set.

var crashEnv = GracefulCrashEnv(20 * time.Second)

// fatalScripts end with a fatal error once their server listens, each of a
// kind whose text Node prints in a different way.
var fatalScripts = map[string]string{
	"throw in a timer": `setTimeout(function boom() {
    throw new Error('boom from the app');
  }, 0);`,
	"throw on the line of a timer": `setTimeout(() => { throw new Error('same line'); }, 0);`,
	"type error":                   `setTimeout(() => { const o = undefined; o.foo(); }, 0);`,
	"error with properties": `setTimeout(() => {
    throw Object.assign(new RangeError('with props'), { code: 'E_BOOM', detail: { a: [1, { b: 2 }] } });
  }, 0);`,
	"error of node's own": `setTimeout(() => { require('fs').readFileSync('/nonexistent/keel'); }, 0);`,
	"rejection":           `async function f() { await null; throw new Error('rejected by the app'); } f();`,
	"rejection with a value that is not an error": `Promise.reject('just a string');`,
	"rejection with an object":                    `Promise.reject({ not: 'an error' });`,
}

func fatalApp(body string) string {
	return `const server = require('http').createServer((req, res) => res.end('ok'));
server.listen(Number(process.env.PORT), () => {
  ` + body + `
});
`
}

// TestNodeGracefulCrashPrintsAsNode: the error reaches stderr in the very
// text Node prints, so crash capture and grouping see what they saw
// without keel, and the exit status is Node's.
func TestNodeGracefulCrashPrintsAsNode(t *testing.T) {
	for name, body := range fatalScripts {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			script := fatalApp(body)
			wantCode, wantStderr := runPlain(t, dir, script, "PORT=0")
			if wantCode != 1 {
				t.Fatalf("plain node exited %d; stderr:\n%s", wantCode, wantStderr)
			}
			port := holdPort(t)
			l := listenTCP(t)
			app := startNode(t, nodeOpts{
				dir:    dir,
				script: script,
				env:    []string{"PORT=" + strconv.Itoa(port), crashEnv},
				listen: serveOn(port, l, nil),
			})
			ev := app.event(t, EventStopping)
			if !ev.Crash {
				t.Fatalf("stopping event %+v, want a crash", ev)
			}
			code, sig := app.wait(t)
			if code != 1 || sig != 0 {
				t.Fatalf("exit %d %v, want 1", code, sig)
			}
			if got := app.stderr.String(); got != wantStderr {
				t.Fatalf("stderr under keel:\n%s\nwithout keel:\n%s", got, wantStderr)
			}
			// keel is told the very text, for the crash report.
			if ev.Text != wantStderr {
				t.Fatalf("the crash event's text:\n%s\nprinted:\n%s", ev.Text, wantStderr)
			}
		})
	}
}

const crashingApp = `
const http = require('http');
let held = null;
const server = http.createServer((req, res) => {
  switch (req.url) {
  case '/slow': held = res; process.send('slow started'); return;
  case '/release': held.end('slow done'); res.end('released'); return;
  case '/throw': setTimeout(() => { throw new Error('thrown for ' + req.url); }, 1); return;
  case '/reject': setTimeout(() => { Promise.reject(new Error('rejected for ' + req.url)); }, 1); return;
  case '/throw-twice':
    setTimeout(() => { throw new Error('first'); }, 1);
    setTimeout(() => { throw new Error('second'); }, 50);
    return;
  case '/throw-later': setTimeout(() => { throw new Error('later for ' + req.url); }, 300); return;
  case '/half': res.write('half of it'); setTimeout(() => { throw new Error('after a write'); }, 1); return;
  }
  res.end('fast');
});
server.listen(Number(process.env.PORT));
process.on('exit', (code) => console.log('exit ' + code));
`

func startCrashingApp(t *testing.T, extra string, env ...string) (*nodeApp, string) {
	t.Helper()
	port := holdPort(t)
	l := listenTCP(t)
	app := startNode(t, nodeOpts{
		script: crashingApp + extra,
		env:    append([]string{"PORT=" + strconv.Itoa(port)}, env...),
		listen: serveOn(port, l, nil),
	})
	app.event(t, EventListening)
	return app, l.LocalAddr().String()
}

// TestNodeGracefulCrashDrains: the request in flight when another one
// crashes the process completes; the crashing one gets a 500; a kept-alive
// connection's next answer says "Connection: close"; the exit is 1.
func TestNodeGracefulCrashDrains(t *testing.T) {
	for _, path := range []string{"/throw", "/reject"} {
		t.Run(path, func(t *testing.T) {
			app, addr := startCrashingApp(t, "", crashEnv)
			slow := dialRaw(t, addr)
			slow.send(t, "/slow")
			if ev := app.event(t, EventMessage); string(ev.Message) != `"slow started"` {
				t.Fatalf("message %s", ev.Message)
			}
			kept := dialRaw(t, addr)
			kept.send(t, "/")
			if resp, body := kept.response(t); resp.StatusCode != 200 || body != "fast" || resp.Close {
				t.Fatalf("before the crash: %d %q close=%v", resp.StatusCode, body, resp.Close)
			}

			crash := dialRaw(t, addr)
			crash.send(t, path)
			resp, body := crash.response(t)
			if resp.StatusCode != 500 || !resp.Close || body != "Internal Server Error\n" {
				t.Fatalf("crashing request: %d %q close=%v, want 500 and Connection: close", resp.StatusCode, body, resp.Close)
			}
			if ev := app.event(t, EventStopping); !ev.Crash {
				t.Fatalf("stopping event %+v, want a crash", ev)
			}
			app.stderr.waitFor(t, "Node.js v")

			select {
			case <-app.exited:
				t.Fatal("the process exited with a request in flight")
			default:
			}
			// The kept-alive connection is still served, and told to close.
			// (New connections are not accepted any more: keel sends them
			// to other instances.)
			kept.send(t, "/release")
			if resp, body := kept.response(t); resp.StatusCode != 200 || body != "released" || !resp.Close {
				t.Fatalf("during the drain: %d %q close=%v, want 200 with Connection: close", resp.StatusCode, body, resp.Close)
			}
			if resp, body := slow.response(t); resp.StatusCode != 200 || body != "slow done" {
				t.Fatalf("the request in flight: %d %q", resp.StatusCode, body)
			}
			if code, sig := app.wait(t); code != 1 || sig != 0 {
				t.Fatalf("exit %d %v, want 1", code, sig)
			}
			app.stdout.waitFor(t, "exit 1")
		})
	}
}

// TestNodeGracefulCrashCutsAHalfAnswer: a crashing request whose answer
// was partly sent cannot get a 500; it is cut off at once.
func TestNodeGracefulCrashCutsAHalfAnswer(t *testing.T) {
	app, addr := startCrashingApp(t, "", crashEnv)
	c := dialRaw(t, addr)
	c.send(t, "/half")
	resp, err := readResponseHead(c)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("head: %v %v", resp, err)
	}
	if _, err := readAll(resp); err == nil {
		t.Fatal("the half answer ended normally")
	}
	if code, _ := app.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
}

// TestNodeSecondFatalErrorExitsAtOnce: a second fatal error of the request
// that failed during the drain ends the process at once, printed as Node
// prints it, with the request in flight cut off.
func TestNodeSecondFatalErrorExitsAtOnce(t *testing.T) {
	app, addr := startCrashingApp(t, "", crashEnv)
	slow := dialRaw(t, addr)
	slow.send(t, "/slow")
	app.event(t, EventMessage)
	crash := dialRaw(t, addr)
	crash.send(t, "/throw-twice")
	if resp, _ := crash.response(t); resp.StatusCode != 500 {
		t.Fatalf("crashing request: %d", resp.StatusCode)
	}
	if code, sig := app.wait(t); code != 1 || sig != 0 {
		t.Fatalf("exit %d %v, want 1", code, sig)
	}
	if _, err := http1Read(slow); err == nil {
		t.Fatal("the request in flight was answered; the second error should have ended the process at once")
	}
	stderr := app.stderr.String()
	if !strings.Contains(stderr, "Error: first") || !strings.Contains(stderr, "Error: second") || strings.Count(stderr, "Node.js v") != 2 {
		t.Fatalf("stderr:\n%s", stderr)
	}
}

// TestNodeAnotherRequestsErrorDuringTheDrain: a fatal error of another
// request in flight during the drain is that request's: it gets its 500
// too, and the drain goes on for the rest.
func TestNodeAnotherRequestsErrorDuringTheDrain(t *testing.T) {
	app, addr := startCrashingApp(t, "", crashEnv)
	slow := dialRaw(t, addr)
	slow.send(t, "/slow")
	app.event(t, EventMessage)
	kept := dialRaw(t, addr)
	kept.send(t, "/")
	kept.response(t)
	later := dialRaw(t, addr)
	later.send(t, "/throw-later")
	crash := dialRaw(t, addr)
	crash.send(t, "/throw")
	if resp, _ := crash.response(t); resp.StatusCode != 500 {
		t.Fatalf("the first crashing request: %d", resp.StatusCode)
	}
	if resp, body := later.response(t); resp.StatusCode != 500 || !resp.Close {
		t.Fatalf("the second crashing request: %d %q close=%v, want a 500", resp.StatusCode, body, resp.Close)
	}
	app.stderr.waitFor(t, "Error: later for /throw-later")
	select {
	case <-app.exited:
		t.Fatal("the process exited with a request in flight")
	default:
	}
	kept.send(t, "/release")
	if resp, body := kept.response(t); resp.StatusCode != 200 || body != "released" {
		t.Fatalf("release: %d %q", resp.StatusCode, body)
	}
	if resp, body := slow.response(t); resp.StatusCode != 200 || body != "slow done" {
		t.Fatalf("the request in flight: %d %q", resp.StatusCode, body)
	}
	if code, _ := app.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
}

// TestNodeAppUncaughtHandlerIsRespected: an app with its own
// 'uncaughtException' listener keeps full control.
func TestNodeAppUncaughtHandlerIsRespected(t *testing.T) {
	own, a := startCrashingApp(t, `process.on('uncaughtException', (err) => console.log('app handled: ' + err.message));`, crashEnv)
	c := dialRaw(t, a)
	c.send(t, "/throw")
	own.stdout.waitFor(t, "app handled: thrown for /throw")
	// The app chose to live on: the request it dropped stays unanswered,
	// and the server keeps serving with keep-alive.
	k := dialRaw(t, a)
	k.send(t, "/")
	if resp, body := k.response(t); resp.StatusCode != 200 || body != "fast" || resp.Close {
		t.Fatalf("after the handled error: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	select {
	case ev := <-own.events:
		if ev.Kind == EventStopping {
			t.Fatalf("the preload reported %+v for an error the app handled", ev)
		}
	default:
	}
	select {
	case <-own.exited:
		t.Fatal("the app exited")
	default:
	}
}

// TestNodeGracefulCrashOff: without KEEL_GRACEFUL_CRASH_MS a fatal error
// ends the process at once, requests in flight and all, as without keel.
func TestNodeGracefulCrashOff(t *testing.T) {
	app, addr := startCrashingApp(t, "")
	slow := dialRaw(t, addr)
	slow.send(t, "/slow")
	app.event(t, EventMessage)
	crash := dialRaw(t, addr)
	crash.send(t, "/throw")
	if _, err := http1Read(crash); err == nil {
		t.Fatal("the crashing request was answered with graceful crash off")
	}
	if _, err := http1Read(slow); err == nil {
		t.Fatal("the request in flight was answered with graceful crash off")
	}
	if code, _ := app.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for {
		select {
		case ev := <-app.events:
			if ev.Kind == EventStopping {
				t.Fatalf("event %+v with graceful crash off", ev)
			}
			continue
		default:
		}
		break
	}
}

func readResponseHead(r *rawConn) (*http.Response, error) {
	return http.ReadResponse(r.br, nil)
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// http1Read reads one response from r, or the error that ended the
// connection first.
func http1Read(r *rawConn) (int, error) {
	resp, err := readResponseHead(r)
	if err != nil {
		return 0, err
	}
	if _, err := readAll(resp); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// A crash text too long for keel keeps its end, cut on a whole character.
func TestLastBytes(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abcdef", 2, "ef"},
		{"xé€", 3, "€"}, // é is 2 bytes, € 3: 3 bytes are exactly €
		{"xé€", 4, "€"}, // the 4th byte from the end is é's second
		{"xé€", 5, "é€"},
		{"x\xff\xfe", 2, "\xff\xfe"}, // not UTF-8: cut where asked
	} {
		if got := lastBytes(c.s, c.n); got != c.want {
			t.Errorf("lastBytes(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
