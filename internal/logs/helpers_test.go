package logs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/keel-run/keel/internal/spec"
)

var targetAll = spec.Target{Instance: -1}

// logFiles lists path's rotated files and path itself, oldest first.
func logFiles(t *testing.T, path string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), filepath.Base(path)+"."); ok {
			n, ok := parseDecimal(rest)
			if !ok {
				t.Fatalf("stray file %s", e.Name())
			}
			nums = append(nums, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	var files []string
	for _, n := range nums {
		files = append(files, rotatedPath(path, n))
	}
	if _, err := os.Stat(path); err == nil {
		files = append(files, path)
	}
	return files
}

// fileLines splits a file into its lines; the file must end with "\n".
func fileLines(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s does not end with a newline: torn record %q", name, b[max(0, len(b)-100):])
	}
	return bytes.Split(b[:len(b)-1], []byte{'\n'})
}

// decodeFiles reads every record of path's files, oldest first, checking
// each is well-formed, and returns the app lines they hold (long lines put
// back together; pieces whose end is missing flushed at the end).
func decodeFiles(t *testing.T, path string) []line {
	t.Helper()
	dec := newDecoder(&source{app: "x", path: path})
	var lines []line
	emit := func(l line) { lines = append(lines, l) }
	for _, f := range logFiles(t, path) {
		for _, b := range fileLines(t, f) {
			r, ok := parseRecord(b)
			if !ok {
				t.Fatalf("%s: malformed record %q", f, b[:min(len(b), 200)])
			}
			if len(r.payload) > MaxPayload {
				t.Fatalf("%s: record payload of %d bytes", f, len(r.payload))
			}
			dec.feed(b, emit)
		}
	}
	dec.flush(emit)
	return lines
}

// rawBytes is what lines say the app wrote.
func rawBytes(lines []line) []byte {
	var b []byte
	for _, l := range lines {
		b = append(b, l.text...)
		if l.newline {
			b = append(b, '\n')
		}
	}
	return b
}

// capture runs w.Capture(r) and fails the test on an error.
func capture(t *testing.T, w *Writer, r io.Reader) {
	t.Helper()
	if err := w.Capture(r); err != nil {
		t.Fatal(err)
	}
}

func openWriter(t *testing.T, path string, opts Options) *Writer {
	t.Helper()
	w, err := OpenWriter(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// chunkReader returns its data in reads of varying small sizes, as a pipe
// fed by a slow writer would.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.n = (c.n*7 + 13) % 7919
	k := min(len(p), len(c.data), 1+c.n)
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}
