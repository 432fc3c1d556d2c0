package daemon

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

// nodeError is a fatal error as Node prints it.
func nodeError(typ, msg, fn string, line int) string {
	return "/app/server.js:" + strconv.Itoa(line) + "\n  " + fn + "();\n  ^\n\n" +
		typ + ": " + msg + "\n    at " + fn + " (/app/server.js:" + strconv.Itoa(line) + ":3)\n" +
		"    at listOnTimeout (node:internal/timers:581:17)\n\nNode.js v20.20.2\n"
}

// A process that crashed gracefully is filed under the error it reported,
// even when its replacement, writing to the same log, crashed after it
// with another error and before it exited; an exit with no reported text
// is read from the log, from the run's start on.
func TestCrashRecordOfAGracefulCrash(t *testing.T) {
	home := t.TempDir()
	first := nodeError("TypeError", "cannot read the widget", "explode", 3)
	second := nodeError("RangeError", "widget out of range", "reject", 5)
	started := time.Now()
	w, err := logs.OpenWriter(logs.Path(home, "web", 0, logs.Stderr), logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The first process's error, then its replacement's.
	if err := w.Capture(strings.NewReader(first + second)); err != nil {
		t.Fatal(err)
	}
	w.Close()

	c := newCrashRecorder(home, nil, slog.New(slog.DiscardHandler), nil)
	defer c.close()
	code := 1
	exit := func(pid int, text string) supervisor.ExitInfo {
		return supervisor.ExitInfo{App: "web", Pid: pid, Started: started,
			Exit: spec.Exit{Code: &code, At: time.Now()}, CrashText: text}
	}
	c.record(exit(100, first))
	if g, ok := c.latest("web"); !ok || g.Title != "TypeError: cannot read the widget" {
		t.Fatalf("the graceful crash is filed as %+v, want the error it reported", g)
	}
	c.record(exit(101, ""))
	if g, ok := c.latest("web"); !ok || g.Title != "RangeError: widget out of range" || g.Count != 1 {
		t.Fatalf("a crash without text is filed as %+v, want the log's newest error", g)
	}
	if gs := c.groups("web"); len(gs) != 2 {
		t.Fatalf("groups %+v", gs)
	}
}
