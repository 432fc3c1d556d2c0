package logs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keel-run/keel/internal/spec"
)

func printString(t *testing.T, opts PrintOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := Print(context.Background(), &b, opts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Streams of an instance are merged by time, instances too; names with
// '-' and digits are told apart; targets, --err, --lines, --raw and --json.
func TestPrintMergesAndSelects(t *testing.T) {
	home := t.TempDir()
	clk := newClock()
	t0 := clk.Now()
	writers := map[string]*Writer{}
	write := func(app string, inst int, stream string, sec int, text string) {
		path := Path(home, app, inst, stream)
		w := writers[path]
		if w == nil {
			w = openWriter(t, path, Options{Now: clk.Now})
			writers[path] = w
		}
		clk.set(t0.Add(time.Duration(sec) * time.Second))
		capture(t, w, strings.NewReader(text+"\n"))
	}
	write("web", 0, Stdout, 1, "o1")
	write("web", 0, Stderr, 2, "e1")
	write("web", 1, Stdout, 3, "p1")
	write("web", 0, Stdout, 4, "o2")
	write("web-1", 0, Stdout, 5, "q1")
	write("web", 0, Stderr, 6, "e2")
	write("web", 0, Stdout, 7, "o3")

	cases := []struct {
		name string
		opts PrintOptions
		want string
	}{
		{"all", PrintOptions{Target: spec.All}, "" +
			"web:0   | o1\n" +
			"web:0   ! e1\n" +
			"web:1   | p1\n" +
			"web:0   | o2\n" +
			"web-1:0 | q1\n" +
			"web:0   ! e2\n" +
			"web:0   | o3\n"},
		{"last 2 per instance", PrintOptions{Target: spec.Target{App: "web", Instance: -1}, Lines: 2}, "" +
			"web:1 | p1\n" +
			"web:0 ! e2\n" +
			"web:0 | o3\n"},
		{"one instance", PrintOptions{Target: spec.Target{App: "web", Instance: 1}}, "web:1 | p1\n"},
		{"dashed name", PrintOptions{Target: spec.Target{App: "web-1", Instance: -1}}, "web-1:0 | q1\n"},
		{"no such app", PrintOptions{Target: spec.Target{App: "we", Instance: -1}}, ""},
		{"err only", PrintOptions{Target: spec.All, ErrOnly: true}, "web:0 ! e1\nweb:0 ! e2\n"},
		{"raw", PrintOptions{Target: spec.Target{App: "web", Instance: 0}, Raw: true}, "o1\ne1\no2\ne2\no3\n"},
		{"json", PrintOptions{Target: spec.Target{App: "web", Instance: 0}, Lines: 2, JSON: true}, "" +
			`{"app":"web","instance":0,"stream":"err","time":"2026-11-25T10:00:06Z","line":"e2"}` + "\n" +
			`{"app":"web","instance":0,"stream":"out","time":"2026-11-25T10:00:07Z","line":"o3"}` + "\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Home = home
			if got := printString(t, tc.opts); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// A 1 MiB line, invalid UTF-8, control bytes and a final line without
// newline come back byte-exactly with --raw and as valid JSON with --json.
func TestPrintLongAndInvalidLines(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rng.UintN(256))
		if big[i] == '\n' {
			big[i] = 'n'
		}
	}
	invalid := "bad \xff\xfe \xc3\x28 end"
	control := "\x00\x1b[31mred\r"
	last := strings.Repeat("x", 200<<10)
	input := "first\n" + string(big) + "\n" + invalid + "\n" + control + "\n" + last

	for _, rd := range []struct {
		name string
		r    func() io.Reader
	}{
		{"one read", func() io.Reader { return strings.NewReader(input) }},
		{"small reads", func() io.Reader { return &chunkReader{data: []byte(input)} }},
	} {
		t.Run(rd.name, func(t *testing.T) {
			home := t.TempDir()
			path := Path(home, "app", 0, Stdout)
			w := openWriter(t, path, Options{})
			capture(t, w, rd.r())
			if got := rawBytes(decodeFiles(t, path)); string(got) != input { // also checks every record's size
				t.Fatalf("file holds %d bytes of output, want %d", len(got), len(input))
			}
			opts := PrintOptions{Home: home, Target: spec.All, Lines: -1}

			raw := opts
			raw.Raw = true
			if got := printString(t, raw); got != input {
				t.Fatalf("--raw gave %d bytes, want %d, first difference at %d", len(got), len(input), firstDiff([]byte(got), []byte(input)))
			}
			raw.Lines = 3
			if got, want := printString(t, raw), invalid+"\n"+control+"\n"+last; got != want {
				t.Fatalf("--raw --lines 3 gave %d bytes, want %d", len(got), len(want))
			}

			js := opts
			js.JSON = true
			out := printString(t, js)
			var objs []jsonLine
			for _, l := range strings.SplitAfter(out, "\n") {
				if l == "" {
					continue
				}
				if !json.Valid([]byte(l)) {
					t.Fatalf("invalid JSON line %q…", l[:min(len(l), 80)])
				}
				var j jsonLine
				if err := json.Unmarshal([]byte(l), &j); err != nil {
					t.Fatal(err)
				}
				objs = append(objs, j)
			}
			if len(objs) != 5 {
				t.Fatalf("%d JSON lines, want 5", len(objs))
			}
			wantLines := []string{"first", string(big), invalid, control, last}
			for i, j := range objs {
				exact := j.Line
				if j.LineBase64 != "" {
					b, err := base64.StdEncoding.DecodeString(j.LineBase64)
					if err != nil {
						t.Fatal(err)
					}
					exact = string(b)
				}
				if exact != wantLines[i] {
					t.Fatalf("JSON line %d holds %d bytes, want %d", i, len(exact), len(wantLines[i]))
				}
				if hasB64, wantB64 := j.LineBase64 != "", i == 1 || i == 2; hasB64 != wantB64 {
					t.Fatalf("JSON line %d: line_base64 present %v, want %v", i, hasB64, wantB64)
				}
				if j.Partial != (i == 4) {
					t.Fatalf("JSON line %d: partial %v", i, j.Partial)
				}
				if j.App != "app" || j.Instance != 0 || j.Stream != Stdout {
					t.Fatalf("JSON line %d: %+v", i, j)
				}
				if _, err := time.Parse(time.RFC3339Nano, j.Time); err != nil {
					t.Fatal(err)
				}
			}
			if want := "bad \ufffd\ufffd \ufffd( end"; objs[2].Line != want {
				t.Fatalf("line %q, want %q", objs[2].Line, want)
			}

			human := printString(t, opts)
			if !strings.HasPrefix(human, "app:0 | first\napp:0 | ") || strings.Count(human, "\n") != 5 {
				t.Fatalf("human output starts %q and has %d newlines", human[:30], strings.Count(human, "\n"))
			}

			for _, n := range []int{1, 100, len(last) + 1, len(input)} {
				got, err := TailRaw(path, n)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != input[len(input)-n:] {
					t.Fatalf("TailRaw(%d) gave %d bytes, not the input's last", n, len(got))
				}
			}
		})
	}
}

// Long lines from two writers whose pieces interleave are put back
// together, count once for --lines, and a foreign line is shown as is.
func TestPrintInterleavedLongLines(t *testing.T) {
	home := t.TempDir()
	path := Path(home, "app", 0, Stdout)
	if err := os.MkdirAll(Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	var b []byte
	rec := func(kind byte, id string, off int64, payload string) {
		b = appendRecord(b, appendTime(nil, clk.advance(time.Second)), kind, id, off, []byte(payload))
	}
	rec(kindPartial, "aaaaaaaa", 0, "A1")
	rec(kindPartial, "bbbbbbbb", 0, "B1")
	rec(kindLine, "aaaaaaaa", 2, "A2")
	rec(kindLine, "", 0, "single")
	b = append(b, "not a record\n"...)
	rec(kindLine, "bbbbbbbb", 2, "B2")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{
		-1: "A1A2\nsingle\nnot a record\nB1B2\n",
		1:  "B1B2\n",
		2:  "not a record\nB1B2\n",
		4:  "A1A2\nsingle\nnot a record\nB1B2\n",
	} {
		if got := printString(t, PrintOptions{Home: home, Target: spec.All, Lines: n, Raw: true}); got != want {
			t.Fatalf("--lines %d gave %q, want %q", n, got, want)
		}
	}
	// A long line still in pieces (its writer is mid-line) is shown as far as it goes.
	rec(kindPartial, "cccccccc", 0, "C1")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := printString(t, PrintOptions{Home: home, Target: spec.All, Lines: 2, Raw: true}), "B1B2\nC1"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestPrintWithoutLogs(t *testing.T) {
	home := t.TempDir()
	if got := printString(t, PrintOptions{Home: home, Target: spec.All}); got != "" {
		t.Fatalf("got %q", got)
	}
	if err := os.MkdirAll(Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(Dir(home)+"/unrelated.txt", []byte("x"), 0o600)
	if got := printString(t, PrintOptions{Home: home, Target: spec.All}); got != "" {
		t.Fatalf("got %q", got)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestPrintErrors(t *testing.T) {
	home := t.TempDir()
	w := openWriter(t, Path(home, "app", 0, Stdout), Options{})
	capture(t, w, strings.NewReader("hello\n"))
	if err := Print(context.Background(), failingWriter{}, PrintOptions{Home: home, Target: spec.All}); err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Fatalf("Print to a failing writer = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Print(ctx, io.Discard, PrintOptions{Home: home, Target: spec.All}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Print with a cancelled context = %v", err)
	}
}

func TestParseName(t *testing.T) {
	cases := []struct {
		name     string
		app      string
		inst     int
		stream   string
		rotation int
		ok       bool
	}{
		{"web-0-out.log", "web", 0, "out", 0, true},
		{"web-12-err.log.3", "web", 12, "err", 3, true},
		{"my-app-2-3-out.log", "my-app-2", 3, "out", 0, true},
		{"a.log-0-out.log.10", "a.log", 0, "out", 10, true},
		{"web-0-out.log.0", "", 0, "", 0, false},
		{"web-0-out.log.01", "", 0, "", 0, false},
		{"web-0-out.log.x", "", 0, "", 0, false},
		{"web-0-out.log.", "", 0, "", 0, false},
		{"web-0-foo.log", "", 0, "", 0, false},
		{"web-01-out.log", "", 0, "", 0, false},
		{"web--out.log", "", 0, "", 0, false},
		{"-0-out.log", "", 0, "", 0, false},
		{"0-out.log", "", 0, "", 0, false},
		{"web-0-out.txt", "", 0, "", 0, false},
		{"daemon.log", "", 0, "", 0, false},
	}
	for _, tc := range cases {
		app, inst, stream, rot, ok := parseName(tc.name)
		if app != tc.app || inst != tc.inst || stream != tc.stream || rot != tc.rotation || ok != tc.ok {
			t.Errorf("parseName(%q) = %q %d %q %d %v", tc.name, app, inst, stream, rot, ok)
		}
	}
	if p := Path("/h", "my-app-2", 3, Stdout); p != "/h/logs/my-app-2-3-out.log" {
		t.Fatalf("Path = %q", p)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		kind    byte
		id      string
		off     int64
		payload string
	}{
		{kindLine, "", 0, "hello"},
		{kindLine, "", 0, ""},
		{kindEOF, "", 0, "no newline \xff"},
		{kindPartial, "0123abcd", 0, "piece"},
		{kindLine, "0123abcd", 65536, " | + % "},
		{kindEOF, "0123abcd", 131072, ""},
	} {
		b := appendRecord(nil, appendTime(nil, ts), tc.kind, tc.id, tc.off, []byte(tc.payload))
		if b[len(b)-1] != '\n' || bytes.Count(b, []byte{'\n'}) != 1 {
			t.Fatalf("record %q", b)
		}
		r, ok := parseRecord(b[:len(b)-1])
		if !ok || !r.time.Equal(ts) || r.kind != tc.kind || r.id != tc.id || r.off != tc.off || string(r.payload) != tc.payload {
			t.Fatalf("round trip of %q gave %+v %v", b, r, ok)
		}
	}
	if got := string(appendTime(nil, ts)); got != "2026-01-02T02:04:05.000000006Z" {
		t.Fatalf("time %q", got)
	}
	for _, bad := range []string{
		"",
		"hello",
		"2026-01-02T02:04:05.000000006Z",
		"2026-01-02T02:04:05.000000006Z |",
		"2026-01-02T02:04:05.00000006Z | x",
		"2026-13-02T02:04:05.000000006Z | x",
		"2026-01-02T02:04:05.000000006Z * x",
		"2026-01-02T02:04:05.000000006Z + x",
		"2026-01-02T02:04:05.000000006Z +0123abcd x",
		"2026-01-02T02:04:05.000000006Z +0123abcd. x",
		"2026-01-02T02:04:05.000000006Z +0123ABCD.1 x",
		"2026-01-02T02:04:05.000000006Z |0123abcd.1x",
	} {
		if r, ok := parseRecord([]byte(bad)); ok {
			t.Errorf("parseRecord(%q) = %+v, want not ok", bad, r)
		}
	}
}

func TestPrintSince(t *testing.T) {
	home := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := OpenWriter(Path(home, "app", 0, Stdout), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Capture(strings.NewReader("before\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	cut := now.Add(time.Second)
	now = cut.Add(time.Second)
	w, err = OpenWriter(Path(home, "app", 0, Stdout), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Capture(strings.NewReader("after\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var b strings.Builder
	if err := Print(context.Background(), &b, PrintOptions{Home: home, Target: spec.All, Lines: -1, Raw: true, Since: cut}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "after\n" {
		t.Fatalf("printed %q", b.String())
	}
}

func TestSplitKeepsCharactersWhole(t *testing.T) {
	line := []byte(strings.Repeat("é", 10) + "\xff\xfe" + strings.Repeat("a", 5)) // 27 bytes
	pieces := split(line, 4)
	if got := bytes.Join(pieces, nil); !bytes.Equal(got, line) {
		t.Fatalf("pieces join to %q, want %q", got, line)
	}
	for i, p := range pieces {
		if len(p) > 4 || len(p) == 0 {
			t.Fatalf("piece %d is %d bytes", i, len(p))
		}
		if i < 5 && (len(p) != 4 || !utf8.Valid(p)) {
			t.Fatalf("piece %d %q cuts a character", i, p)
		}
	}
	if got := split([]byte("abc"), 4); len(got) != 1 {
		t.Fatalf("a short line split into %d", len(got))
	}
}
