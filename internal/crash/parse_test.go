package crash

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// corpus is what Parse must make of each real trace in testdata/traces
// (captured from go1.26.8, node v20.20.2 and python 3.11.7 on stderr).
var corpus = []struct {
	file      string
	kind      Kind
	errorType string
	title     string
	topFunc   string // TopFrame
	topLine   int
	createdBy string
}{
	{"go-closed-channel.txt", KindGoPanic, "panic", "panic: close of closed channel", "main.extra", 44, ""},
	{"go-concurrent-map-writes.txt", KindGoFatal, "fatal error", "fatal error: concurrent map writes", "main.main.func4", 59, "main.main"},
	{"go-custom-error.txt", KindGoPanic, "panic", "panic: my error code=11037", "main.extra", 32, ""},
	{"go-deadlock.txt", KindGoFatal, "fatal error", "fatal error: all goroutines are asleep - deadlock!", "main.main", 10, ""},
	{"go-deep-elided.txt", KindGoPanic, "panic", "panic: deep", "main.extra.func3", 49, ""},
	{"go-defer-panic.txt", KindGoPanic, "panic", "panic: in defer", "main.main.func3", 48, ""},
	{"go-error-value.txt", KindGoPanic, "panic", "panic: dial tcp 127.0.0.1:40050: connect: connection refused", "main.main", 51, ""},
	{"go-goroutine-index.txt", KindGoPanic, "panic", "panic: runtime error: index out of range [5] with length 3", "main.index", 13, "main.main"},
	{"go-http-goroutine-nil.txt", KindGoPanic, "panic", "panic: runtime error: invalid memory address or nil pointer dereference", "main.total", 14, "main.handle"},
	{"go-int-value.txt", KindGoPanic, "panic", "panic: 42", "main.main", 74, ""},
	{"go-multiline.txt", KindGoPanic, "panic", "panic: line one", "main.extra", 46, ""},
	{"go-nil-deref.txt", KindGoPanic, "panic", "panic: runtime error: invalid memory address or nil pointer dereference", "main.main", 34, ""},
	{"go-recovered-nested.txt", KindGoPanic, "panic", "panic: second", "main.main.func2", 44, ""},
	{"go-recovered-repanicked.txt", KindGoPanic, "panic", "panic: first at 1795655142402743402", "main.main.func1", 38, ""},
	{"go-sigsegv-user-crash.txt", KindGoFatal, "SIGSEGV", "SIGSEGV: segmentation violation", "main.main", 11, ""},
	{"go-stack-overflow.txt", KindGoFatal, "fatal error", "fatal error: stack overflow", "main.main.func5", 67, ""},
	{"go-struct-value.txt", KindGoPanic, "panic", "panic: (struct { A int; B string }) 0x7787a8", "main.main", 76, ""},
	{"go-traceback-all.txt", KindGoPanic, "panic", "panic: assignment to entry in nil map", "main.extra.func2", 39, "main.extra"},
	{"node-assert.txt", KindNodeException, "AssertionError [ERR_ASSERTION]", "AssertionError [ERR_ASSERTION]: Expected values to be strictly deep-equal:", "Object.<anonymous>", 1, ""},
	{"node-async-json.txt", KindNodeRejection, "SyntaxError", "SyntaxError: Expected property name or '}' in JSON at position 1", "inner", 1, ""},
	{"node-async-reject.txt", KindNodeRejection, "RangeError", "RangeError: bad id 13", "load", 1, ""},
	{"node-cause.txt", KindNodeException, "Error", "Error: headers", "Object.<anonymous>", 3, ""},
	{"node-ctor-throw.txt", KindNodeException, "Error", "Error: in ctor", "new Foo", 1, ""},
	{"node-eaddrinuse.txt", KindNodeException, "Error", "Error: listen EADDRINUSE: address already in use :::40769", "Server.<anonymous>", 3, ""},
	{"node-error-props.txt", KindNodeException, "Error", "Error: with props", "Object.<anonymous>", 1, ""},
	{"node-esm-tla-reject.txt", KindNodeRejection, "", "Unhandled rejection: 42", "", 0, ""},
	{"node-esm-reject.txt", KindNodeRejection, "Error", "Error: esm reject", "<anonymous>", 1, ""},
	{"node-esm-sync-throw.txt", KindNodeException, "Error", "Error: esm sync 18297", "<anonymous>", 1, ""},
	{"node-eval-reference.txt", KindNodeException, "ReferenceError", "ReferenceError: undefinedVar is not defined", "Object.<anonymous>", 1, ""},
	{"node-fs-enoent.txt", KindNodeException, "Error", "Error: ENOENT: no such file or directory, open '/nonexistent/22579'", "Object.<anonymous>", 1, ""},
	{"node-module-not-found.txt", KindNodeException, "Error", "Error: Cannot find module './does-not-exist-22638'", "Object.<anonymous>", 1, ""},
	{"node-null-in-server.txt", KindNodeException, "TypeError", "TypeError: Cannot read properties of null (reading 'foo')", "Timeout._onTimeout", 1, ""},
	{"node-reject-error.txt", KindNodeRejection, "Error", "Error: rejected 22427", "Object.<anonymous>", 1, ""},
	{"node-reject-late.txt", KindNodeRejection, "Error", "Error: late 1795655767067", "Timeout._onTimeout", 1, ""},
	{"node-reject-string.txt", KindNodeRejection, "UnhandledPromiseRejection", `UnhandledPromiseRejection: the promise rejected with the reason "plain string 22452".`, "throwUnhandledRejectionsMode", 389, ""},
	{"node-reject-then-throw.txt", KindNodeRejection, "Error [ERR_HTTP_HEADERS_SENT]", "Error [ERR_HTTP_HEADERS_SENT]: Cannot set headers after they are sent to the client", "Object.<anonymous>", 1, ""},
	{"node-reject-undefined.txt", KindNodeRejection, "UnhandledPromiseRejection", `UnhandledPromiseRejection: the promise rejected with the reason "undefined".`, "throwUnhandledRejectionsMode", 389, ""},
	{"node-throw-object.txt", KindNodeException, "", "Uncaught { a: 1 }", "", 0, ""},
	{"node-timeout-throw.txt", KindNodeException, "Error", "Error: boom 1795655766174", "Timeout._onTimeout", 1, ""},
	{"node-typeerror.txt", KindNodeException, "TypeError", "TypeError: Cannot read properties of undefined (reading 'y')", "f", 1, ""},
	{"python-chained-cause.txt", KindPython, "RuntimeError", "RuntimeError: config 22662 broken in /tmp/tmpikbishw8", "main", 9, ""},
	{"python-connection-refused.txt", KindPython, "ConnectionRefusedError", "ConnectionRefusedError: [Errno 111] Connection refused", "connect", 6, ""},
	{"python-during-handling.txt", KindPython, "ZeroDivisionError", "ZeroDivisionError: division by zero", "f", 5, ""},
	{"python-exception-group.txt", KindPython, "ExceptionGroup", "ExceptionGroup: many (2 sub-exceptions)", "<module>", 1, ""},
	{"python-multiline-message.txt", KindPython, "ValidationError", "ValidationError: 2 validation errors for User", "<module>", 3, ""},
	{"python-recursion.txt", KindPython, "RecursionError", "RecursionError: maximum recursion depth exceeded", "r", 3, ""},
	{"python-syntax-error.txt", KindPython, "SyntaxError", "SyntaxError: invalid syntax", "", 1, ""},
	{"python-thread-exception.txt", KindPython, "json.decoder.JSONDecodeError", "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", "job", 5, ""},
}

func readTrace(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "traces", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var exit1 = spec.ExitCode(1, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))

func TestCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "traces", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(corpus) {
		t.Errorf("%d trace files but %d expectations: every trace needs one", len(files), len(corpus))
	}
	sigs := map[string]string{}
	for _, c := range corpus {
		t.Run(c.file, func(t *testing.T) {
			text := readTrace(t, c.file)
			r := Parse(text, nil, exit1)
			if r.Kind != c.kind || r.ErrorType != c.errorType || r.Title != c.title || r.Source != "stderr" {
				t.Errorf("got kind %q type %q title %q source %q\nwant kind %q type %q title %q",
					r.Kind, r.ErrorType, r.Title, r.Source, c.kind, c.errorType, c.title)
			}
			top, ok := r.TopFrame()
			if ok != (c.topFunc != "" || c.topLine != 0) || top.Function != c.topFunc || top.Line != c.topLine {
				t.Errorf("top frame %+v (%v), want %s:%d; frames %+v", top, ok, c.topFunc, c.topLine, r.Frames)
			}
			cb := ""
			if r.CreatedBy != nil {
				cb = r.CreatedBy.Function
			}
			if cb != c.createdBy {
				t.Errorf("created by %q, want %q", cb, c.createdBy)
			}
			if r.Text == "" || len(r.Text) > MaxText || len(r.Frames) > MaxFrames {
				t.Errorf("text of %d bytes, %d frames", len(r.Text), len(r.Frames))
			}
			if len(text) <= MaxText && !strings.Contains(string(text), r.Text) {
				t.Errorf("text is not a cut of the trace:\n%s", r.Text)
			}
			sig := Signature(r)
			if other, dup := sigs[sig]; dup {
				t.Errorf("same signature as %s", other)
			}
			sigs[sig] = c.file
			// The same trace on stdout, under noise on stderr, is found too.
			r2 := Parse([]byte("starting\nlistening on :8080\n"), text, exit1)
			r2.Source = r.Source
			if !reflect.DeepEqual(r, r2) {
				t.Errorf("from stdout:\n%+v\nwant\n%+v", r2, r)
			}
		})
	}
}

// TestCorpusDetails checks frames and cut text in detail for a few traces.
func TestCorpusDetails(t *testing.T) {
	r := Parse(readTrace(t, "go-goroutine-index.txt"), nil, exit1)
	want := []Frame{
		{Function: "main.index", File: "/tmp/crashscratch/g/main.go", Line: 13, InApp: true},
		{Function: "main.worker", File: "/tmp/crashscratch/g/main.go", Line: 18, InApp: true},
	}
	if !reflect.DeepEqual(r.Frames, want) {
		t.Errorf("go frames %+v", r.Frames)
	}
	if *r.CreatedBy != (Frame{Function: "main.main", File: "/tmp/crashscratch/g/main.go", Line: 29, InApp: true}) {
		t.Errorf("created by %+v", *r.CreatedBy)
	}

	r = Parse(readTrace(t, "node-timeout-throw.txt"), nil, exit1)
	wantNode := []Frame{
		{Function: "Timeout._onTimeout", File: "/tmp/crashscratch/a.js", Line: 1, Column: 26, InApp: true},
		{Function: "listOnTimeout", File: "node:internal/timers", Line: 581, Column: 17},
		{Function: "process.processTimers", File: "node:internal/timers", Line: 519, Column: 7},
	}
	if !reflect.DeepEqual(r.Frames, wantNode) || r.Message != "boom 1795655766174" {
		t.Errorf("node frames %+v message %q", r.Frames, r.Message)
	}

	r = Parse(readTrace(t, "python-connection-refused.txt"), nil, exit1)
	if len(r.Frames) != 4 || r.Frames[0].Function != "create_connection" || r.Frames[0].InApp ||
		r.Frames[3] != (Frame{Function: "<module>", File: "/tmp/crashscratch/p7.py", Line: 9, InApp: true}) {
		t.Errorf("python frames (innermost first) %+v", r.Frames)
	}

	cases := []struct{ file, first, last string }{
		{"node-cause.txt", "/tmp/crashscratch/o.js:4", "Node.js v20.20.2"},                                                          // not the log lines above
		{"python-thread-exception.txt", "Exception in thread Thread-1 (job):", "2026-11-26 01:16:08,783 INFO thread died; exiting"}, // a message line may be anything
		{"python-chained-cause.txt", "Traceback (most recent call last):", "RuntimeError: config 22662 broken in /tmp/tmpikbishw8"},
		{"python-exception-group.txt", "  + Exception Group Traceback (most recent call last):", "    +------------------------------------"},
		{"go-stack-overflow.txt", "runtime: goroutine stack exceeds 1000000000-byte limit", "\t/usr/local/go/src/runtime/mcleanup.go:672 +0xa5"},
		{"go-traceback-all.txt", "panic: assignment to entry in nil map", "\t/tmp/crashscratch/g/main2.go:37 +0x228"},
		{"go-sigsegv-user-crash.txt", "SIGSEGV: segmentation violation", "gs     0x0"},
		{"go-multiline.txt", "panic: line one", "\t/tmp/crashscratch/g/main.go:23 +0x37"},
	}
	for _, c := range cases {
		r := Parse(readTrace(t, c.file), nil, exit1)
		lines := strings.Split(r.Text, "\n")
		if lines[0] != c.first || lines[len(lines)-1] != c.last {
			t.Errorf("%s: text from %q to %q, want %q to %q", c.file, lines[0], lines[len(lines)-1], c.first, c.last)
		}
	}
	// GOTRACEBACK=all with many goroutines: the text is cut, and keeps the
	// header and the crashing goroutine.
	all := string(readTrace(t, "go-traceback-all.txt"))
	_, others, _ := strings.Cut(all, "\n\ngoroutine 1 [sleep]:")
	big := all + strings.Repeat("\ngoroutine 7 [sleep]:"+others, 40) // over MaxText, under MaxInput
	r = Parse([]byte(big), nil, exit1)
	if len(big) < 2*MaxText || len(r.Text) > MaxText || !strings.Contains(r.Text, " bytes cut …\n") ||
		!strings.HasPrefix(r.Text, all[:strings.Index(all, "\n\ngoroutine 1 [sleep]:")]) || r.Title != "panic: assignment to entry in nil map" {
		t.Errorf("a %d-byte trace cut to %d bytes, title %q:\n%s", len(big), len(r.Text), r.Title, r.Text)
	}
	if r := Parse(readTrace(t, "go-multiline.txt"), nil, exit1); r.Message != "line one\nline two\nline three" {
		t.Errorf("multi-line panic message %q", r.Message)
	}
	if r := Parse(readTrace(t, "python-multiline-message.txt"), nil, exit1); !strings.HasSuffix(r.Message, "\nage\n  value is not a valid integer") {
		t.Errorf("multi-line python message %q", r.Message)
	}
}
