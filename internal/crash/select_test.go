package crash

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

func logLines(n int, format string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, format+"\n", i)
	}
	return b.String()
}

func exitSig(name string) spec.Exit { return spec.ExitSignal(name, time.Unix(1e9, 0)) }

func exitCode(c int) spec.Exit { return spec.ExitCode(c, time.Unix(1e9, 0)) }

// TestFindingTheCrash checks which text Parse takes as the crash: the
// newest trace, not a stale one, stderr before stdout.
func TestFindingTheCrash(t *testing.T) {
	goPanic := string(readTrace(t, "go-goroutine-index.txt"))
	nodeCrash := string(readTrace(t, "node-timeout-throw.txt"))
	pyCrash := string(readTrace(t, "python-during-handling.txt"))

	cases := []struct {
		name           string
		stderr, stdout string
		exit           spec.Exit
		kind           Kind
		title          string
		source         string
	}{
		{"after a lot of logging", logLines(2000, "GET /users/%d 200") + goPanic, "", exitCode(2),
			KindGoPanic, "panic: runtime error: index out of range [5] with length 3", "stderr"},
		{"a few lines after a Go trace", goPanic + logLines(10, "worker %d: shutting down"), "", exitCode(2),
			KindGoPanic, "panic: runtime error: index out of range [5] with length 3", "stderr"},
		{"an earlier run's Go trace", goPanic + logLines(11, "starting again %d") + "fatal: no config\n", "", exitCode(1),
			KindExit, "fatal: no config", "stderr"},
		{"an earlier run's Node crash", nodeCrash + logLines(11, "listening %d") + "bye\n", "", exitCode(1),
			KindExit, "bye", "stderr"},
		{"Python lines after a traceback", pyCrash + logLines(30, "atexit handler %d"), "", exitCode(1),
			KindPython, "ZeroDivisionError: division by zero", "stderr"},
		{"a logged Python traceback, long ago", pyCrash + logLines(31, "served request %d") + "exiting: db gone\n", "", exitCode(1),
			KindExit, "exiting: db gone", "stderr"},
		{"the newest of two traces", nodeCrash + "restarting\n" + pyCrash, "", exitCode(1),
			KindPython, "ZeroDivisionError: division by zero", "stderr"},
		{"the newest of two Go panics", strings.Replace(goPanic, "[5]", "[9]", 1) + "\nrestarted\n" + goPanic, "", exitCode(2),
			KindGoPanic, "panic: runtime error: index out of range [5] with length 3", "stderr"},
		{"stdout when stderr has none", "warning: low memory\n", "booting\n" + pyCrash, exitCode(1),
			KindPython, "ZeroDivisionError: division by zero", "stdout"},
		{"stderr before stdout", pyCrash, nodeCrash, exitCode(1),
			KindPython, "ZeroDivisionError: division by zero", "stderr"},
		{"SIGKILL ignores text", goPanic, "", exitSig("SIGKILL"),
			KindSignal, "killed by SIGKILL", "stderr"},
		{"keel's own stop ignores text", pyCrash, "", spec.Exit{Signal: ptr("SIGTERM"), Reason: "max_memory"},
			KindSignal, "max_memory: killed by SIGTERM (terminated)", "stderr"},
		{"keel's health restart, code", "", "", spec.Exit{Code: ptr(1), Reason: "health"},
			KindExit, "health: exited with code 1", ""},
		{"a signal with a trace is the trace", goPanic, "", exitSig("SIGABRT"),
			KindGoPanic, "panic: runtime error: index out of range [5] with length 3", "stderr"},
		{"a signal without one", "about to segfault\n", "", exitSig("SIGSEGV"),
			KindSignal, "killed by SIGSEGV (segmentation fault)", "stderr"},
		{"a signal by number", "", "", exitSig("11"),
			KindSignal, "killed by SIGSEGV (segmentation fault)", ""},
		{"a plain exit", "loading config\nerror: config file /etc/app/x.yaml not found\n\n", "", exitCode(3),
			KindExit, "error: config file /etc/app/x.yaml not found", "stderr"},
		{"a silent exit", "", "all good\n", exitCode(3),
			KindExit, "exited with code 3", "stdout"},
		{"nothing at all", "", "", spec.Exit{},
			KindExit, "exited with code unknown", ""},
		{"GOTRACEBACK=none", "panic: boom\n\n", "", exitCode(2),
			KindGoPanic, "panic: boom", "stderr"},
		{"a log line that says panic", "panic: the disk is full, said the operator\nstill serving\n", "", exitCode(1),
			KindExit, "still serving", "stderr"},
		{"CRLF and colours", strings.ReplaceAll("\x1b[31m"+pyCrash+"\x1b[0m", "\n", "\r\n"), "", exitCode(1),
			KindPython, "ZeroDivisionError: division by zero", "stderr"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Parse([]byte(c.stderr), []byte(c.stdout), c.exit)
			if r.Kind != c.kind || r.Title != c.title || r.Source != c.source {
				t.Errorf("got %q %q from %q, want %q %q from %q\ntext:\n%s", r.Kind, r.Title, r.Source, c.kind, c.title, c.source, r.Text)
			}
			if r.Reason != c.exit.Reason {
				t.Errorf("reason %q", r.Reason)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestSignalAndExitReports(t *testing.T) {
	r := Parse([]byte(logLines(50, "line %d")), nil, exitSig("SIGSEGV"))
	if r.ErrorType != "SIGSEGV" || r.Message != "segmentation fault" || len(r.Frames) != 0 {
		t.Errorf("%+v", r)
	}
	if want := strings.TrimSuffix(logLines(50, "line %d")[len(logLines(30, "line %d")):], "\n"); r.Text != want {
		t.Errorf("signal text is not the last 20 lines:\n%s", r.Text)
	}
	r = Parse([]byte("a\nb\n"), nil, exitCode(3))
	if r.ErrorType != "exit code 3" || r.Message != "b" || r.Text != "a\nb" {
		t.Errorf("%+v", r)
	}
	long := strings.Repeat("é", 1000)
	r = Parse([]byte(long+"\x00\x01\n"), nil, exitCode(1))
	if n := len([]rune(r.Title)); n != maxTitle || strings.ContainsAny(r.Title, "\x00\x01\n") {
		t.Errorf("title of %d runes: %q", n, r.Title)
	}
}

// TestNodeFormats covers Node versions not installed here, from their
// documented output: Node 15–18 (a "fromPromise" header, bracketed non-Error
// rejections) and Node 12 (no "Node.js v…" footer).
func TestNodeFormats(t *testing.T) {
	cases := []struct {
		name, text  string
		kind        Kind
		title, top  string
		frames      int
		errorType   string
		textEndLine string
	}{
		{"node 18 non-error rejection", `node:internal/process/promises:288
            triggerUncaughtException(err, true /* fromPromise */);
            ^

[UnhandledPromiseRejection: This error originated either by throwing inside of an async function without a catch block, or by rejecting a promise which was not handled with .catch(). The promise rejected with the reason "#<Object>".] {
  code: 'ERR_UNHANDLED_REJECTION'
}

Node.js v18.20.8
`, KindNodeRejection, `UnhandledPromiseRejection: the promise rejected with the reason "#<Object>".`, "", 0, "UnhandledPromiseRejection", "Node.js v18.20.8"},
		{"node 18 error rejection", `node:internal/process/promises:288
            triggerUncaughtException(err, true /* fromPromise */);
            ^

Error: connect ECONNREFUSED 127.0.0.1:5432
    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16) {
  errno: -111,
  code: 'ECONNREFUSED',
  syscall: 'connect',
  address: '127.0.0.1',
  port: 5432
}

Node.js v18.20.8
`, KindNodeRejection, "Error: connect ECONNREFUSED 127.0.0.1:5432", "TCPConnectWrap.afterConnect [as oncomplete]", 1, "Error", "Node.js v18.20.8"},
		{"node 12 exception, no footer", `/srv/app/server.js:10
    throw new Error('listen failed');
    ^

Error: listen failed
    at Server.<anonymous> (/srv/app/server.js:10:11)
    at Server.emit (events.js:198:13)
    at emitListeningNT (net.js:1313:10)
    at process._tickCallback (internal/process/next_tick.js:63:19)
`, KindNodeException, "Error: listen failed", "Server.<anonymous>", 4, "Error", "    at process._tickCallback (internal/process/next_tick.js:63:19)"},
		{"frames only, after logs", `request 1 ok
TypeError: Cannot read property 'id' of undefined
    at handler (/srv/app/routes.js:22:19)
    at Layer.handle [as handle_request] (/srv/app/node_modules/express/lib/router/layer.js:95:5)
`, KindNodeException, "TypeError: Cannot read property 'id' of undefined", "handler", 2, "TypeError", "    at Layer.handle [as handle_request] (/srv/app/node_modules/express/lib/router/layer.js:95:5)"},
		{"empty message", `/srv/a.js:1
throw new Error()
^

Error
    at Object.<anonymous> (/srv/a.js:1:7)

Node.js v20.20.2
`, KindNodeException, "Error", "Object.<anonymous>", 1, "Error", "Node.js v20.20.2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Parse([]byte(c.text), nil, exitCode(1))
			top, _ := r.TopFrame()
			lines := strings.Split(r.Text, "\n")
			if r.Kind != c.kind || r.Title != c.title || top.Function != c.top || len(r.Frames) != c.frames ||
				r.ErrorType != c.errorType || lines[len(lines)-1] != c.textEndLine {
				t.Errorf("got %q %q type %q top %q, %d frames, text ending %q\nwant %q %q type %q top %q, %d frames, text ending %q",
					r.Kind, r.Title, r.ErrorType, top.Function, len(r.Frames), lines[len(lines)-1],
					c.kind, c.title, c.errorType, c.top, c.frames, c.textEndLine)
			}
		})
	}
}

func TestPythonFormats(t *testing.T) {
	cases := []struct {
		name, text string
		title, top string
	}{
		{"keyboard interrupt, no message", `Traceback (most recent call last):
  File "/srv/app.py", line 3, in <module>
    time.sleep(100)
KeyboardInterrupt
`, "KeyboardInterrupt", "<module>"},
		{"a syntax error in an imported module", `Traceback (most recent call last):
  File "/srv/app.py", line 1, in <module>
    import handlers
  File "/srv/handlers.py", line 4
    def broken(:
               ^
SyntaxError: invalid syntax
`, "SyntaxError: invalid syntax", ""}, // the innermost frame is the bad line, in no function
		{"frozen and site-packages frames skipped", `Traceback (most recent call last):
  File "/srv/app.py", line 8, in <module>
    run()
  File "/srv/app.py", line 5, in run
    requests.get("http://127.0.0.1:9/")
  File "/usr/lib/python3/dist-packages/requests/api.py", line 73, in get
    return request("get", url, params=params, **kwargs)
  File "<frozen importlib._bootstrap>", line 1178, in _find_and_load
requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded
`, "requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded", "run"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Parse([]byte(c.text), nil, exitCode(1))
			top, _ := r.TopFrame()
			if r.Kind != KindPython || r.Title != c.title || top.Function != c.top {
				t.Errorf("got %q %q top %+v", r.Kind, r.Title, top)
			}
		})
	}
}

func TestPythonDeepStack(t *testing.T) {
	var b strings.Builder
	b.WriteString("Traceback (most recent call last):\n")
	for i := range 300 {
		fmt.Fprintf(&b, "  File \"/srv/app.py\", line %d, in f%d\n    f%d()\n", i+1, i, i+1)
	}
	b.WriteString("RuntimeError: deep\n")
	r := Parse([]byte(b.String()), nil, exitCode(1))
	if len(r.Frames) != MaxFrames || r.Frames[0].Function != "f299" || r.Frames[MaxFrames-1].Function != "f250" {
		t.Fatalf("%d frames, innermost %+v, outermost kept %+v", len(r.Frames), r.Frames[0], r.Frames[len(r.Frames)-1])
	}
}

func TestPythonInApp(t *testing.T) {
	cases := map[string]bool{
		"/srv/app/main.py":                                            true,
		"/home/u/lib/pythonapp/main.py":                               true,
		"/usr/lib/python3.11/json/decoder.py":                         false,
		"/root/.pyenv/versions/3.11.7/lib/python3.11/socket.py":       false,
		"/srv/app/.venv/lib/python3.11/site-packages/requests/api.py": false,
		"/usr/lib/python3/dist-packages/requests/api.py":              false,
		"<frozen importlib._bootstrap>":                               false,
		"<string>":                                                    false,
	}
	for file, want := range cases {
		if got := pyInApp(file); got != want {
			t.Errorf("pyInApp(%q) = %v", file, got)
		}
	}
}
