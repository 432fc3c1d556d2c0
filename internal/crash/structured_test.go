package crash

import (
	"path/filepath"
	"strings"
	"testing"
)

// A panic that guard recovered and logged as one slog JSON record (with
// the stack in a field), after which serve drained and the process exited
// 1: read as the Go panic, the panicking handler on top.
func TestStructuredGoPanic(t *testing.T) {
	text := readTrace(t, filepath.Join("..", "structured", "slog-guard-panic.txt"))
	r := Parse(text, nil, exit1)
	if r.Kind != KindGoPanic || r.Title != "panic: deliberate panic from /panic" {
		t.Fatalf("kind %q title %q", r.Kind, r.Title)
	}
	top, ok := r.TopFrame()
	if !ok || top.Function != "main.routes.func4" || !strings.HasSuffix(top.File, "main.go") {
		t.Fatalf("top frame %+v; frames %+v", top, r.Frames)
	}
	for _, f := range r.Frames {
		if strings.Contains(f.Function, "debug.Stack") || strings.Contains(f.Function, "newPanicError") {
			t.Fatalf("recovery frames kept: %+v", r.Frames)
		}
	}
	// Another run: other goroutine ids, addresses and times, same group.
	other := strings.NewReplacer("goroutine 11 ", "goroutine 97 ", "0x3a096b", "0x7f0011", "01:47:24", "09:12:01").Replace(string(text))
	if Signature(Parse([]byte(other), nil, exit1)) != Signature(r) {
		t.Fatal("a second run of the same panic got another signature")
	}
}

// A plain exit whose last line is a JSON record is titled by its message
// and error, not by the raw JSON.
func TestStructuredTitle(t *testing.T) {
	line := `{"time":"2026-11-26T01:47:24Z","level":"ERROR","msg":"cannot start","error":"open /etc/app.toml: permission denied"}`
	r := Parse([]byte("booting\n"+line+"\n"), nil, exit1)
	if r.Kind != KindExit || r.Title != "cannot start: open /etc/app.toml: permission denied" {
		t.Fatalf("kind %q title %q", r.Kind, r.Title)
	}
	// Not JSON, or JSON without msg/error: the line as it is.
	for _, l := range []string{`{"level":"ERROR"}`, `{broken`, `plain words`} {
		if r := Parse([]byte(l+"\n"), nil, exit1); r.Title != l {
			t.Errorf("title %q for %q", r.Title, l)
		}
	}
}
