package logs

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TailRaw returns the app's last bytes across rotated files, a long line
// split over two files included.
func TestTailRawAcrossRotation(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stderr)
	// A long line's two records are bigger than half of MaxSize, so its
	// pieces land in different files.
	w := openWriter(t, path, Options{MaxSize: 70000, Keep: 3})
	var input bytes.Buffer
	input.Write(numbered40(0, 3000)) // 21,000 bytes of app output, 120,000 on disk
	input.WriteString(strings.Repeat("L", 100000) + "\n")
	input.Write(numbered40(3000, 500))
	input.WriteString("panic: boom") // the stream ends without a newline
	capture(t, w, &chunkReader{data: input.Bytes()})

	kept := rawBytes(decodeFiles(t, path))
	if len(logFiles(t, path)) != 4 || !bytes.HasSuffix(input.Bytes(), kept) || len(kept) < 100000 {
		t.Fatalf("setup: %d files keeping %d bytes", len(logFiles(t, path)), len(kept))
	}
	withL := 0
	for _, f := range logFiles(t, path) {
		for _, b := range fileLines(t, f) {
			if r, _ := parseRecord(b); bytes.HasPrefix(r.payload, []byte("LLL")) {
				withL++
				break
			}
		}
	}
	if withL != 2 {
		t.Fatalf("setup: the long line is in %d files, want 2", withL)
	}
	for _, n := range []int{1, 11, 100, 3500, 3500 + 100001, len(kept), len(kept) + 1, 10 << 20} {
		got, err := TailRaw(path, n)
		if err != nil {
			t.Fatal(err)
		}
		want := kept[max(0, len(kept)-n):]
		if !bytes.Equal(got, want) {
			t.Fatalf("TailRaw(%d) gave %d bytes %q…, want %d", n, len(got), got[:min(len(got), 20)], len(want))
		}
	}
	if got, err := TailRaw(path, 0); err != nil || len(got) != 0 {
		t.Fatalf("TailRaw(0) = %q, %v", got, err)
	}
}

func TestTailRawMissing(t *testing.T) {
	_, err := TailRaw(Path(t.TempDir(), "app", 0, Stderr), 100)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("TailRaw of a missing log = %v, want fs.ErrNotExist", err)
	}
}

func TestTailRawSinceSkipsEarlierRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app-0-err.log")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := OpenWriter(path, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Capture(strings.NewReader("old crash\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	start := now.Add(time.Second)
	now = start.Add(time.Second)
	w, err = OpenWriter(path, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Capture(strings.NewReader("new crash\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, err := TailRawSince(path, 1<<10, start)
	if err != nil || string(got) != "new crash\n" {
		t.Fatalf("TailRawSince = %q, %v", got, err)
	}
	if got, _ := TailRaw(path, 1<<10); string(got) != "old crash\nnew crash\n" {
		t.Fatalf("TailRaw = %q", got)
	}
}
