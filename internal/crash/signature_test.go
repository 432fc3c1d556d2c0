package crash

import (
	"regexp"
	"strings"
	"testing"
)

func TestMessageShape(t *testing.T) {
	cases := []struct{ in, want string }{
		{"runtime error: index out of range [5] with length 3", "runtime error: index out of range [N] with length N"},
		{"boom 1795654910294", "boom N"},
		{"dial tcp 127.0.0.1:40796: connect: connection refused", "dial tcp N.N.N.N:N: connect: connection refused"},
		{"(struct { A int; B string }) 0x4d44d8", "(struct { A int; B string }) <hex>"},
		{"config 6521 broken in /tmp/tmpo2jfvs18", "config N broken in <path>"},
		{"invalid literal for int() with base 10: 'x6521'", "invalid literal for int() with base N: 'xN'"},
		{"ENOENT: no such file or directory, open '/nonexistent/6452'", "ENOENT: no such file or directory, open '<path>'"},
		{"user 3f2b8c1e-9d4a-4b7e-a1c2-0e9f8d7c6b5a not found", "user <uuid> not found"},
		{"session a8f3k9q2 expired at 2026-11-25T10:00:00.123Z", "session <id> expired at N-N-NTN:N:N.NZ"},
		{"commit deadbeef42 missing", "commit <id> missing"},
		{"Cannot read properties of undefined (reading 'x')", "Cannot read properties of undefined (reading 'x')"},
		{"KeyError on user_123 and user-9", "KeyError on user_N and user-N"},
		{"int64 overflow", "intN overflow"},
		{"1/0 and/or  x\t\ty", "N/N and/or x y"},
		{"GET http://127.0.0.1:8080/api/users/17?x=1 failed", "GET http:<path> failed"},
		{"first line 1\nsecond line 2", "first line N"},
		{"  padded  ", "padded"},
		{"", ""},
		{"0x", "Nx"},
		{"héllo wörld 42", "héllo wörld N"},
	}
	for _, c := range cases {
		if got := messageShape(c.in); got != c.want {
			t.Errorf("messageShape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := messageShape(strings.Repeat("a", 10000)); len(got) != shapeBytes {
		t.Errorf("shape of a long message has %d bytes", len(got))
	}
}

var hex16 = regexp.MustCompile(`^[0-9a-f]{16}$`)

func sigOf(t *testing.T, text string) string {
	t.Helper()
	r := Parse([]byte(text), nil, exit1)
	if r.Kind == KindExit {
		t.Fatalf("no crash found in:\n%s", text)
	}
	s := Signature(r)
	if !hex16.MatchString(s) {
		t.Fatalf("signature %q", s)
	}
	return s
}

// replace applies old/new pairs in order; each old must be there.
func replace(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("test data lacks %q", pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// TestSignatureIgnoresWhatVaries: each variant is the same crash in
// another run, instance, directory, or Node/Go version.
func TestSignatureIgnoresWhatVaries(t *testing.T) {
	goIndex := string(readTrace(t, "go-goroutine-index.txt"))
	nodeThrow := string(readTrace(t, "node-timeout-throw.txt"))
	pyChain := string(readTrace(t, "python-chained-cause.txt"))
	goAll := string(readTrace(t, "go-traceback-all.txt"))
	goSingle := goAll[:strings.Index(goAll, "\n\ngoroutine 1 [sleep]:")]

	cases := []struct{ name, a, b string }{
		{"go: goroutine id, pc offsets, args, index, directory", goIndex, replace(t, goIndex,
			"goroutine 24 [", "goroutine 1187 [", "+0x65", "+0x7a", "(0x0?, 0x0?)", "(0xc000012345, 0x1)",
			"[5]", "[11]", "/tmp/crashscratch/g/", "/home/ci/build-8812/src/", "in goroutine 1", "in goroutine 7")},
		{"go: a caller's line", goIndex, replace(t, goIndex, "main.go:18 ", "main.go:25 ")},
		{"go: GOTRACEBACK=all or single", goAll, goSingle},
		{"node: timestamp, column, directory, node version", nodeThrow, replace(t, nodeThrow,
			"boom 1795655766174", "boom 1795655799999", "a.js:1:26", "a.js:1:30", "/tmp/crashscratch/", "/srv/releases/42/",
			"timers:581:17", "timers:590:11", "Node.js v20.20.2", "Node.js v20.19.0")},
		{"node: a non-Error rejection's reason", string(readTrace(t, "node-reject-string.txt")),
			replace(t, string(readTrace(t, "node-reject-string.txt")), "plain string 22452", "plain string 99")},
		{"python: pid, temp dir, script dir", pyChain, replace(t, pyChain,
			"22662", "31337", "tmpikbishw8", "tmpzz9ab3cd", "/tmp/crashscratch/p1.py", "/opt/app-2/p1.py")},
		{"go fatal: goroutine ids and addresses", string(readTrace(t, "go-concurrent-map-writes.txt")),
			replace(t, string(readTrace(t, "go-concurrent-map-writes.txt")), "goroutine 22", "goroutine 99", "0x75c1a6?", "0x4cc999?")},
	}
	for _, c := range cases {
		if sa, sb := sigOf(t, c.a), sigOf(t, c.b); sa != sb {
			t.Errorf("%s: %s != %s\n%s\n---\n%s", c.name, sa, sb, c.a, c.b)
		}
	}
}

// TestSignatureSeparates: each variant is a different crash.
func TestSignatureSeparates(t *testing.T) {
	goIndex := string(readTrace(t, "go-goroutine-index.txt"))
	nodeThrow := string(readTrace(t, "node-timeout-throw.txt"))
	nodeReject := string(readTrace(t, "node-reject-late.txt"))
	py := string(readTrace(t, "python-during-handling.txt"))
	if k := Parse([]byte(nodeReject), nil, exit1).Kind; k != KindNodeRejection {
		t.Fatalf("node-reject-late is a %s", k)
	}
	cases := []struct{ name, a, b string }{
		{"go: message words", goIndex, replace(t, goIndex, "index out of range [5] with length 3", "slice bounds out of range [:5] with capacity 3")},
		{"go: top function", goIndex, replace(t, goIndex, "main.index(...)", "main.indexOther(...)")},
		{"go: top line", goIndex, replace(t, goIndex, "main.go:13\n", "main.go:14\n")},
		{"go: who started the goroutine", goIndex, replace(t, goIndex, "created by main.main in", "created by main.serve in")},
		{"go: panic or fatal error", goIndex, replace(t, goIndex, "panic: runtime error", "fatal error: runtime error")},
		{"node: error type", nodeThrow, replace(t, nodeThrow, "Error: boom", "RangeError: boom")},
		{"node: message words", nodeThrow, replace(t, nodeThrow, "boom 1795655766174", "bang 1795655766174")},
		// The same text, but the caret under "rej(" rather than under "new": thrown, not rejected.
		{"node: exception or rejection", nodeReject, replace(t, nodeReject, "\n"+strings.Repeat(" ", 45)+"^\n", "\n"+strings.Repeat(" ", 41)+"^\n")},
		{"python: top function", py, replace(t, py, ", in f\n    1/0", ", in g\n    1/0")},
		{"python: error type", py, replace(t, py, "ZeroDivisionError: division by zero", "ArithmeticError: division by zero")},
	}
	for _, c := range cases {
		if sa, sb := sigOf(t, c.a), sigOf(t, c.b); sa == sb {
			t.Errorf("%s: both %s\n%s\n---\n%s", c.name, sa, c.a, c.b)
		}
	}
	// Reason and signal.
	base := Report{Kind: KindSignal, ErrorType: "SIGKILL"}
	withReason := base
	withReason.Reason = "max_memory"
	other := base
	other.ErrorType = "SIGSEGV"
	if Signature(base) == Signature(withReason) || Signature(base) == Signature(other) {
		t.Error("signals or reasons not told apart")
	}
}

func TestSignatureOfOddReports(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for _, r := range []Report{
		{},
		{Frames: []Frame{{}}},
		{Kind: Kind(huge), ErrorType: huge, Message: huge, Frames: []Frame{{Function: huge, File: huge + "/" + huge}}, CreatedBy: &Frame{Function: huge}},
		{Frames: []Frame{{Function: "runtime.gopanic", File: "/usr/local/go/src/runtime/panic.go"}}},
	} {
		if s := Signature(r); !hex16.MatchString(s) || s != Signature(r) {
			t.Errorf("signature %q", s)
		}
	}
	// Only runtime frames: they still count, so different ones differ.
	a := Report{Kind: KindGoFatal, Frames: []Frame{{Function: "runtime.throw", File: "panic.go"}}}
	b := Report{Kind: KindGoFatal, Frames: []Frame{{Function: "runtime.fatal", File: "panic.go"}}}
	if Signature(a) == Signature(b) {
		t.Error("runtime-only stacks not told apart")
	}
}
