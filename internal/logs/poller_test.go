package logs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// One Poller captures several real children printing 200,000 lines each
// as fast as they can and exiting: every line of every child is in its own
// log once, in order, with no goroutine per stream.
func TestPollerCapturesManyChildren(t *testing.T) {
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const children = 4
	home := t.TempDir()
	before := runtime.NumGoroutine()
	type child struct {
		cmd     *exec.Cmd
		w       *Writer
		stream  *Stream
		started bool
	}
	var kids []child
	for i := range children {
		w := openWriter(t, Path(home, "app", i, Stdout), Options{})
		r, c, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		s, err := p.Capture(w, r, nil)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=lines-exit0")
		cmd.Stdout = c
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		kids = append(kids, child{cmd: cmd, w: w, stream: s})
	}
	if extra := runtime.NumGoroutine() - before; extra >= children {
		t.Errorf("%d goroutines more for %d streams, want fewer than one each", extra, children)
	}
	var want bytes.Buffer
	for i := range helperLines {
		want.Write(numberedLine(i))
	}
	for i, k := range kids {
		if err := k.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		select {
		case <-k.stream.Done():
		case <-time.After(60 * time.Second):
			t.Fatalf("stream %d did not end after its child exited", i)
		}
		if err := k.stream.Err(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		got := rawBytes(decodeFiles(t, Path(home, "app", i, Stdout)))
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("child %d: log holds %d bytes, want %d (first difference at %d)", i, len(got), want.Len(), firstDiff(got, want.Bytes()))
		}
	}
}

// A line without its newline is recorded at EOF, and a line longer than
// MaxPayload in pieces, as Capture does.
func TestPollerLastLineAndLongLines(t *testing.T) {
	_, s, c, path := pollPipe(t)
	long := bytes.Repeat([]byte("x"), 3*MaxPayload+17)
	text := append(append([]byte("first\n"), long...), "\nno newline"...)
	go func() { c.Write(text); c.Close() }()
	<-s.Done()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	lines := decodeFiles(t, path)
	if got := rawBytes(lines); !bytes.Equal(got, text) {
		t.Fatalf("log holds %q…, want %q…", got[:min(len(got), 40)], text[:40])
	}
	if last := lines[len(lines)-1]; last.newline || string(last.text) != "no newline" {
		t.Fatalf("last line %q (newline %v), want %q without newline", last.text, last.newline, "no newline")
	}
}

// CloseStream ends a stream whose pipe a stray process still holds open:
// what was written is recorded, and Err says the stream was closed.
func TestPollerCloseStreamRecordsWhatIsThere(t *testing.T) {
	p, s, c, path := pollPipe(t)
	defer c.Close()
	if _, err := c.Write([]byte("one\ntwo\nthree")); err != nil {
		t.Fatal(err)
	}
	p.CloseStream(s)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("CloseStream did not end the stream")
	}
	if !errors.Is(s.Err(), os.ErrClosed) {
		t.Fatalf("Err %v, want os.ErrClosed", s.Err())
	}
	if got := rawBytes(decodeFiles(t, path)); string(got) != "one\ntwo\nthree" {
		t.Fatalf("log holds %q", got)
	}
	// The pipe is closed: the writer sees EPIPE.
	if _, err := c.Write([]byte("more\n")); err == nil {
		t.Fatal("writing after CloseStream succeeded; the poller's read end is still open")
	}
}

// pollPipe starts a Poller capturing a new pipe into a log at path; c is
// the pipe's write end. The Poller is closed when the test ends.
func pollPipe(t *testing.T) (p *Poller, s *Stream, c *os.File, path string) {
	t.Helper()
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	path = Path(t.TempDir(), "app", 0, Stdout)
	w := openWriter(t, path, Options{})
	r, c, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if s, err = p.Capture(w, r, nil); err != nil {
		t.Fatal(err)
	}
	return p, s, c, path
}
