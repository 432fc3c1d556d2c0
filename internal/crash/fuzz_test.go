package crash

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keel-run/keel/internal/spec"
)

// The fuzz targets start from every real trace in testdata/traces, plus
// the inputs in testdata/fuzz/<target>. `go test` runs just those seeds;
// `go test -fuzz=FuzzParse` explores from them.

func addTraceSeeds(f *testing.F, add func(text []byte)) {
	files, err := filepath.Glob(filepath.Join("testdata", "traces", "*.txt"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no traces: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

var kinds = map[Kind]bool{
	KindGoPanic: true, KindGoFatal: true, KindNodeException: true, KindNodeRejection: true,
	KindPython: true, KindSignal: true, KindExit: true,
}

func FuzzParse(f *testing.F) {
	addTraceSeeds(f, func(b []byte) {
		f.Add(b, []byte(nil), 1, "", "")
		f.Add([]byte("noise\n"), b, 2, "", "")
	})
	f.Add([]byte(""), []byte(""), 0, "SIGSEGV", "")
	f.Add([]byte("x\n"), []byte(""), 0, "9", "health")
	f.Fuzz(func(t *testing.T, stderr, stdout []byte, code int, signal, reason string) {
		exit := spec.Exit{Code: &code, At: time.Unix(1e9, 0), Reason: reason}
		if signal != "" {
			exit.Code, exit.Signal = nil, &signal
		}
		r := Parse(stderr, stdout, exit)
		if !kinds[r.Kind] {
			t.Fatalf("kind %q", r.Kind)
		}
		if strings.ContainsAny(r.Title, "\n\r") || utf8.RuneCountInString(r.Title) > maxTitle || !utf8.ValidString(r.Title) {
			t.Fatalf("title %q", r.Title)
		}
		if len(r.Text) > MaxText || len(r.Message) > maxMessage || len(r.Frames) > MaxFrames || !utf8.ValidString(r.Text) {
			t.Fatalf("text %d bytes, message %d, %d frames", len(r.Text), len(r.Message), len(r.Frames))
		}
		for _, fr := range r.Frames {
			if len(fr.Function) > maxField || len(fr.File) > maxField {
				t.Fatalf("frame %+v", fr)
			}
		}
		if r.Source != "" && r.Source != "stderr" && r.Source != "stdout" {
			t.Fatalf("source %q", r.Source)
		}
		if r.Reason != reason {
			t.Fatalf("reason %q", r.Reason)
		}
		if again := Parse(stderr, stdout, exit); !reflect.DeepEqual(r, again) {
			t.Fatalf("not deterministic:\n%+v\n%+v", r, again)
		}
		if s := Signature(r); !hex16.MatchString(s) {
			t.Fatalf("signature %q", s)
		}
	})
}

func FuzzSignature(f *testing.F) {
	addTraceSeeds(f, func(b []byte) {
		r := Parse(b, nil, exit1)
		fr := Frame{}
		if len(r.Frames) > 0 {
			fr = r.Frames[0]
		}
		f.Add(string(r.Kind), r.ErrorType, r.Message, fr.Function, fr.File, fr.Line, fr.InApp)
	})
	f.Fuzz(func(t *testing.T, kind, errType, msg, fn, file string, line int, inApp bool) {
		r := Report{Kind: Kind(kind), ErrorType: errType, Message: msg,
			Frames: []Frame{{Function: fn, File: file, Line: line, InApp: inApp}, {Function: fn + ".caller", File: file}}}
		s := Signature(r)
		if !hex16.MatchString(s) || Signature(r) != s {
			t.Fatalf("signature %q", s)
		}
		shape := messageShape(msg)
		if len(shape) > 4*shapeBytes || strings.Contains(shape, "\n") {
			t.Fatalf("shape of %d bytes: %q", len(shape), shape)
		}
		// What varies between runs does not change the signature: other
		// digits in the message, another directory, another column, the
		// line of a caller.
		varied := r
		m := []byte(msg) // bytes, not runes: msg need not be UTF-8
		for i, c := range m {
			if c >= '1' && c <= '9' {
				m[i] = '1' + (c-'1'+4)%9
			}
		}
		varied.Message = string(m)
		varied.Frames = []Frame{{Function: fn, File: "/elsewhere/" + fileBase(file), Line: line, Column: 99, InApp: inApp},
			{Function: fn + ".caller", File: file, Line: line + 7}}
		if !strings.HasPrefix(file, "/") || strings.HasSuffix(file, "/") || strings.HasSuffix(file, "\\") {
			varied.Frames[0].File = file // not an absolute path to move
		}
		if Signature(varied) != s {
			t.Fatalf("signature changed with what varies:\n%+v\n%+v", r, varied)
		}
	})
}

// TestParseBoundedWork feeds Parse inputs built to make a careless parser
// quadratic: every line a candidate start, or a 64 KiB line. The fuzzers
// time out on a hang; this keeps the worst shapes in every run.
func TestParseBoundedWork(t *testing.T) {
	shapes := []string{
		"panic: x\n", "fatal error: x\n", "panic: x\n\t\n", "goroutine 1 [running]:\n", "main.f()\n", "\tx.go:1\n",
		"SIGQUIT: quit\nPC=0x0\n", "-----\n", "rax 0x0\n",
		"Node.js v20.0.0\n", "    at f (/a.js:1:1)\n", "/a.js:1\nx\n^\n", "^\n", "a.js:1\n", "Error: x\n", "    at f (/a.js:1:1) {\n",
		"Traceback (most recent call last):\n", "  File \"a.py\", line 1, in f\n", "  + Exception Group Traceback (most recent call last):\n",
		"  | x\n", "SyntaxError: x\n", "The above exception was the direct cause of the following exception:\n",
		"\n", "\x1b[", "x",
	}
	for _, s := range shapes {
		in := []byte(strings.Repeat(s, MaxInput/len(s)+1))
		r := Parse(in, in, exitCode(1))
		if len(r.Text) > MaxText {
			t.Errorf("%q: text of %d bytes", s, len(r.Text))
		}
		Signature(r)
	}
	// Mixed: a Node header, a Python traceback and a Go panic line in turn.
	mixed := []byte(strings.Repeat("/a.js:1\nsrc\n^\n\nError: x\nTraceback (most recent call last):\npanic: y\n", 2000))
	Parse(mixed, mixed, exitCode(1))
}

func BenchmarkParse(b *testing.B) {
	cases := map[string][]byte{
		"go":             readTrace(b, "go-goroutine-index.txt"),
		"node":           readTrace(b, "node-timeout-throw.txt"),
		"python":         readTrace(b, "python-chained-cause.txt"),
		"64KiB logs":     []byte(strings.Repeat("GET /users/1 200 3ms\n", MaxInput/21)),
		"64KiB panics":   []byte(strings.Repeat("panic: x\n", MaxInput/9)),
		"64KiB frames":   []byte(strings.Repeat("    at f (/a.js:1:1)\n", MaxInput/21)),
		"64KiB carets":   []byte(strings.Repeat("/a.js:1\nx\n^\n", MaxInput/12)),
		"64KiB pyframes": []byte(strings.Repeat("  File \"a.py\", line 1, in f\n", MaxInput/28)),
		"64KiB one line": []byte(strings.Repeat("x", MaxInput)),
	}
	for name, in := range cases {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				Signature(Parse(in, nil, exitCode(1)))
			}
		})
	}
}
