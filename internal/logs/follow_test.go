package logs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// --follow prints the tail, then every appended line once, in order,
// across many rotations, picks up an instance whose file appears later,
// and returns nil when its context is cancelled.
func TestFollowPrint(t *testing.T) {
	home := t.TempDir()
	w0 := openWriter(t, Path(home, "app", 0, Stdout), Options{MaxSize: 2000, Keep: 100})
	capture(t, w0, bytes.NewReader(numbered40(0, 10)))

	out := newSyncBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Print(ctx, out, PrintOptions{Home: home, Target: spec.All, Lines: 5, Follow: true, Raw: true, PollInterval: time.Millisecond})
	}()
	want := string(numbered40(5, 5))
	if got := out.waitFor(t, "the tail", func(s string) bool { return len(s) >= len(want) }); got != want {
		t.Fatalf("tail %q, want %q", got, want)
	}

	capture(t, w0, bytes.NewReader(numbered40(10, 3)))
	capture(t, w0, bytes.NewReader(numbered40(13, 500))) // 10 rotations in a row
	for i := 513; i < 600; i++ {
		capture(t, w0, bytes.NewReader(numbered40(i, 1)))
	}
	want += string(numbered40(10, 590))
	if got := out.waitFor(t, "line 599", func(s string) bool { return len(s) >= len(want) }); got != want {
		t.Fatalf("followed %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff([]byte(got), []byte(want)))
	}

	w1 := openWriter(t, Path(home, "app", 1, Stdout), Options{})
	capture(t, w1, strings.NewReader("new 1\nnew 2\n"))
	want += "new 1\nnew 2\n"
	if got := out.waitFor(t, "the new instance", func(s string) bool { return len(s) >= len(want) }); got != want {
		t.Fatalf("after the new instance: ends %q, want %q", got[len(got)-20:], want[len(want)-20:])
	}

	cancel()
	waitPrintDone(t, done)
}

// waitPrintDone waits for a following Print to return nil after its
// context was cancelled.
func waitPrintDone(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Print returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Print did not return after cancel")
	}
}

// pollAll runs one follower poll and returns the raw bytes of its lines.
func pollAll(t *testing.T, fl *follower) string {
	t.Helper()
	var got []line
	if err := fl.poll(func(l line) { got = append(got, l) }); err != nil {
		t.Fatal(err)
	}
	return string(rawBytes(got))
}

// Several rotations between two polls: with enough files kept nothing is
// lost; with fewer, the file being read is still finished through its
// descriptor, only whole deleted files are missing, and nothing repeats.
func TestFollowerAcrossRotationsBetweenPolls(t *testing.T) {
	for _, keep := range []int{100, 2, 0} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			path := Path(t.TempDir(), "app", 0, Stdout)
			w := openWriter(t, path, Options{MaxSize: 1000, Keep: keep})
			capture(t, w, bytes.NewReader(numbered40(0, 10)))
			lines, fl, err := tail(&source{app: "app", stream: Stdout, path: path}, 3)
			if err != nil {
				t.Fatal(err)
			}
			defer fl.close()
			if got := string(rawBytes(lines)); got != string(numbered40(7, 3)) {
				t.Fatalf("tail %q", got)
			}
			capture(t, w, bytes.NewReader(numbered40(10, 5)))
			if got := pollAll(t, fl); got != string(numbered40(10, 5)) {
				t.Fatalf("poll %q", got)
			}

			capture(t, w, bytes.NewReader(numbered40(15, 200))) // 8 rotations
			got := pollAll(t, fl)
			if keep == 100 {
				if got != string(numbered40(15, 200)) {
					t.Fatalf("poll after rotations gave %d bytes, want all %d", len(got), 200*7)
				}
			} else {
				// The rest of the file we were reading (25 lines fill one),
				// then what is still on disk.
				kept := string(rawBytes(decodeFiles(t, path)))
				head := string(numbered40(15, 25-15))
				if got != head+kept {
					t.Fatalf("poll after rotations gave\n%q\nwant\n%q", got, head+kept)
				}
				if !strings.HasSuffix(got, string(numbered40(214, 1))) {
					t.Fatal("the last line is missing")
				}
			}
			if got := pollAll(t, fl); got != "" {
				t.Fatalf("an idle poll gave %q", got)
			}
		})
	}
}

// The path may be missing for a moment, between a writer's rename and the
// new file's creation: the follower waits for it.
func TestFollowerWhilePathIsMissing(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stdout)
	w := openWriter(t, path, Options{MaxSize: 1000, Keep: 5})
	capture(t, w, bytes.NewReader(numbered40(0, 3)))
	_, fl, err := tail(&source{app: "app", stream: Stdout, path: path}, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.close()
	if err := rotate(path, 5); err != nil { // as a writer does, before it creates the new file
		t.Fatal(err)
	}
	if got := pollAll(t, fl); got != "" {
		t.Fatalf("poll %q", got)
	}
	capture(t, w, bytes.NewReader(numbered40(3, 2))) // w finds the path gone and creates it
	if got := pollAll(t, fl); got != string(numbered40(3, 2)) {
		t.Fatalf("poll %q", got)
	}
}

// A stream whose files appear after following started is read from its
// oldest file.
func TestFollowerNewStreamWithRotatedFiles(t *testing.T) {
	path := Path(t.TempDir(), "app", 5, Stdout)
	fl := newFollower(&source{app: "app", instance: 5, stream: Stdout, path: path})
	defer fl.close()
	if got := pollAll(t, fl); got != "" {
		t.Fatalf("poll %q", got)
	}
	w := openWriter(t, path, Options{MaxSize: 1000, Keep: 5})
	capture(t, w, bytes.NewReader(numbered40(0, 100))) // 4 files
	if got := pollAll(t, fl); got != string(numbered40(0, 100)) {
		t.Fatalf("poll gave %d bytes, want %d", len(got), 700)
	}
}

// A long line whose first piece is on disk when the tail is read, and
// whose end comes later, is printed once, whole, by the follower.
func TestFollowerCompletesALongLineStartedBeforeTheTail(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stdout)
	w := openWriter(t, path, Options{})
	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	captured := make(chan error, 1)
	go func() { captured <- w.Capture(r) }()
	long := strings.Repeat("z", MaxPayload+100)
	if _, err := pw.WriteString("before\n" + long); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first piece on disk", func() bool {
		st, err := os.Stat(path)
		return err == nil && st.Size() > MaxPayload
	})
	lines, fl, err := tail(&source{app: "app", stream: Stdout, path: path}, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.close()
	if got := string(rawBytes(lines)); got != "before\n" {
		t.Fatalf("tail %q", got)
	}
	pw.WriteString("\nafter\n")
	pw.Close()
	waitCaptured(t, captured)
	r.Close()
	if got := pollAll(t, fl); got != long+"\nafter\n" {
		t.Fatalf("poll gave %d bytes, want %d", len(got), len(long)+7)
	}
}

// waitUntil polls cond until it holds or a deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A writer appends and rotates at full speed while Print follows: every
// line comes out once, in order.
func TestFollowLiveWriterRotating(t *testing.T) {
	const n = 20000
	home := t.TempDir()
	path := Path(home, "app", 0, Stdout)
	w := openWriter(t, path, Options{MaxSize: 16 << 10, Keep: 1000})
	capture(t, w, strings.NewReader("first\n"))

	out := newSyncBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Print(ctx, out, PrintOptions{Home: home, Target: spec.All, Lines: 1, Follow: true, Raw: true, PollInterval: time.Millisecond})
	}()
	out.waitFor(t, "the tail", func(s string) bool { return s == "first\n" })

	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	captured := make(chan error, 1)
	go func() { captured <- w.Capture(r) }()
	var want bytes.Buffer
	want.WriteString("first\n")
	for i := range n {
		want.Write(numberedLine(i))
	}
	if _, err := pw.Write(want.Bytes()[len("first\n"):]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	waitCaptured(t, captured)
	r.Close()
	if files := logFiles(t, path); len(files) < 20 {
		t.Fatalf("only %d files", len(files))
	}
	got := out.waitFor(t, "the last line", func(s string) bool { return len(s) >= want.Len() })
	if got != want.String() {
		t.Fatalf("followed %d bytes, want %d (first difference at %d)", len(got), want.Len(), firstDiff([]byte(got), want.Bytes()))
	}
	cancel()
	waitPrintDone(t, done)
}

func waitCaptured(t *testing.T, captured <-chan error) {
	t.Helper()
	select {
	case err := <-captured:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Capture did not return")
	}
}
