package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// numbered40 returns n lines of 7 bytes ("n 0000\n"): 40-byte records.
func numbered40(from, n int) []byte {
	var b bytes.Buffer
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "n %04d\n", i)
	}
	return b.Bytes()
}

func TestRotationKeepsKeepFiles(t *testing.T) {
	for _, keep := range []int{0, 1, 3} {
		t.Run("keep="+strconv.Itoa(keep), func(t *testing.T) {
			clk := newClock()
			path := Path(t.TempDir(), "app", 0, Stdout)
			const maxSize = 1000 // 25 records of 40 bytes
			w := openWriter(t, path, Options{MaxSize: maxSize, Keep: keep, Now: clk.Now})
			input := numbered40(0, 500)
			// One big batch, then small reads: both split at record boundaries.
			capture(t, w, bytes.NewReader(input[:2100]))
			capture(t, w, &chunkReader{data: input[2100:]})

			files := logFiles(t, path)
			if len(files) != keep+1 || files[len(files)-1] != path {
				t.Fatalf("files %v, want %d rotated and the current one", files, keep)
			}
			for i, f := range files {
				st, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() > maxSize {
					t.Fatalf("%s is %d bytes, over %d", f, st.Size(), maxSize)
				}
				if i < len(files)-1 && st.Size() != maxSize {
					t.Fatalf("rotated %s is %d bytes, want it full (%d)", f, st.Size(), maxSize)
				}
				if st.Mode().Perm() != 0o600 {
					t.Fatalf("%s has mode %v, want 0600", f, st.Mode())
				}
			}
			raw := rawBytes(decodeFiles(t, path))
			// 500 lines = 20 full files; the current one is the 20th.
			if want := input[len(input)-(keep+1)*maxSize/40*7:]; !bytes.Equal(raw, want) {
				t.Fatalf("kept %q…, want the last %d lines", raw[:min(len(raw), 40)], len(want)/7)
			}
		})
	}
}

func TestRotationRemovesFilesBeyondKeep(t *testing.T) {
	home := t.TempDir()
	path := Path(home, "app", 0, Stdout)
	if err := os.MkdirAll(Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 4, 6, 9} { // left by an earlier, larger log_keep
		if err := os.WriteFile(rotatedPath(path, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := openWriter(t, path, Options{MaxSize: 1000, Keep: 2})
	capture(t, w, bytes.NewReader(numbered40(0, 30)))
	files := logFiles(t, path)
	if want := []string{rotatedPath(path, 2), rotatedPath(path, 1), path}; fmt.Sprint(files) != fmt.Sprint(want) {
		t.Fatalf("files %v, want %v", files, want)
	}
}

func TestRecordLargerThanMaxSizeGoesAloneIntoAFile(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stdout)
	w := openWriter(t, path, Options{MaxSize: 100, Keep: 5})
	big := strings.Repeat("x", 200)
	capture(t, w, strings.NewReader("short\n"+big+"\nshort2\n"))
	files := logFiles(t, path)
	if len(files) != 3 {
		t.Fatalf("files %v, want 3", files)
	}
	for i, want := range []string{"short", big, "short2"} {
		lines := fileLines(t, files[i])
		r, _ := parseRecord(lines[0])
		if len(lines) != 1 || string(r.payload) != want {
			t.Fatalf("%s holds %q, want one record of %q", files[i], lines, want)
		}
	}
}

// Two writers of one path (the old and new keeper during a reload) append
// at full speed while rotating: no record is torn or interleaved, no file
// passes MaxSize, each writer's lines (long ones too) are all there in
// order, and only Keep rotated files remain.
func TestConcurrentWritersRotateWithoutTornRecords(t *testing.T) {
	const (
		perWriter = 20000
		maxSize   = 128 << 10
		longEvery = 1000
		longLen   = 100 << 10 // two records
	)
	for _, keep := range []int{1000, 2} {
		t.Run("keep="+strconv.Itoa(keep), func(t *testing.T) {
			path := Path(t.TempDir(), "app", 0, Stdout)
			names := []string{"A", "B"}
			done := make(chan error, 2*len(names))
			for _, name := range names {
				w := openWriter(t, path, Options{MaxSize: maxSize, Keep: keep})
				r, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				go func() { // the app
					bw := bufio.NewWriterSize(pw, 4096)
					for i := range perWriter {
						fmt.Fprintf(bw, "%s %06d ", name, i)
						if i%longEvery == longEvery-1 {
							bw.WriteString(strings.Repeat(strings.ToLower(name), longLen))
						}
						bw.WriteString("end\n")
					}
					err := bw.Flush()
					pw.Close()
					done <- err
				}()
				go func() { // the keeper
					err := w.Capture(r)
					r.Close()
					done <- err
				}()
			}
			deadline := time.After(60 * time.Second)
			for range 2 * len(names) {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-deadline:
					t.Fatal("writers did not finish")
				}
			}

			files := logFiles(t, path)
			if keep < 1000 && len(files) != keep+1 {
				t.Fatalf("%d files, want %d", len(files), keep+1)
			}
			if keep == 1000 && len(files) < 10 {
				t.Fatalf("only %d files: no rotation happened", len(files))
			}
			for _, f := range files {
				if st, _ := os.Stat(f); st.Size() > maxSize {
					t.Fatalf("%s is %d bytes, over %d", f, st.Size(), maxSize)
				}
			}
			next := map[string]int{} // next number expected from each writer
			switches, last := 0, ""
			for _, l := range decodeFiles(t, path) {
				text := string(l.text)
				if w := text[:1]; w != last {
					switches, last = switches+1, w
				}
				name, num, ok := strings.Cut(text, " ")
				if !ok || len(num) < 6 || !l.newline {
					// Only the end of a long line whose start was rotated away
					// may come without its number, and only first.
					if keep < 1000 && len(next) < 2 && strings.Trim(text, "ab") == "end" {
						continue
					}
					t.Fatalf("line %q…", text[:min(len(text), 40)])
				}
				i, err := strconv.Atoi(num[:6])
				if err != nil {
					t.Fatalf("line %q…", text[:min(len(text), 40)])
				}
				want, seen := next[name]
				if !seen && keep < 1000 {
					want = i // older lines were rotated away
				}
				if i != want {
					t.Fatalf("writer %s: line %d after %d", name, i, want-1)
				}
				wantText := fmt.Sprintf("%s %06d ", name, i)
				if i%longEvery == longEvery-1 {
					wantText += strings.Repeat(strings.ToLower(name), longLen)
				}
				if wantText += "end"; text != wantText {
					t.Fatalf("writer %s line %d: %d bytes, want %d", name, i, len(text), len(wantText))
				}
				next[name] = i + 1
			}
			if len(next) == 0 {
				t.Fatal("no line kept")
			}
			t.Logf("the writers took turns %d times", switches)
			for name, n := range next { // a writer seen has all its later lines kept
				if n != perWriter {
					t.Fatalf("writer %s: last line %d, want %d", name, n-1, perWriter-1)
				}
			}
		})
	}
}

// A writer whose file was rotated by another writer continues in the new
// file, not in the rotated one.
func TestWriterFollowsRotationByAnotherWriter(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stdout)
	a := openWriter(t, path, Options{MaxSize: 1000, Keep: 3})
	b := openWriter(t, path, Options{MaxSize: 1000, Keep: 3})
	capture(t, a, bytes.NewReader(numbered40(0, 30))) // rotates once
	capture(t, b, strings.NewReader("from b\n"))
	if got := rawBytes(decodeFiles(t, rotatedPath(path, 1))); bytes.Contains(got, []byte("from b")) {
		t.Fatal("b wrote into the rotated file")
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(cur, []byte(" | from b\n")) {
		t.Fatalf("current file ends %q", cur[max(0, len(cur)-60):])
	}
}

func TestWriterReopensAPathMovedAway(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stdout)
	w := openWriter(t, path, Options{})
	capture(t, w, strings.NewReader("before\n"))
	if err := os.Rename(path, filepath.Join(filepath.Dir(path), "moved")); err != nil {
		t.Fatal(err)
	}
	capture(t, w, strings.NewReader("after\n"))
	if got := string(rawBytes(decodeFiles(t, path))); got != "after\n" {
		t.Fatalf("path holds %q, want %q", got, "after\n")
	}
}

// A record torn by a writer that died mid-write is left on a line of its
// own; the next record does not glue onto it.
func TestWriterStartsAfterATornRecord(t *testing.T) {
	home := t.TempDir()
	path := Path(home, "app", 0, Stdout)
	if err := os.MkdirAll(Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	torn := "2026-11-25T10:00:00.000000000Z | whole\n2026-11-25T10:00:01.000000000Z | tor"
	if err := os.WriteFile(path, []byte(torn), 0o600); err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, path, Options{})
	capture(t, w, strings.NewReader("next\n"))
	if got := string(rawBytes(decodeFiles(t, path))); got != "whole\ntor\nnext\n" {
		t.Fatalf("read back %q", got)
	}
}

func TestCaptureKeepsLastLineWithoutNewline(t *testing.T) {
	path := Path(t.TempDir(), "app", 0, Stdout)
	w := openWriter(t, path, Options{})
	capture(t, w, strings.NewReader("a\n\nno newline"))
	lines := fileLines(t, path)
	var kinds []byte
	for _, l := range lines {
		r, ok := parseRecord(l)
		if !ok {
			t.Fatalf("bad record %q", l)
		}
		kinds = append(kinds, r.kind)
	}
	if string(kinds) != "||%" {
		t.Fatalf("record kinds %q, want ||%%", kinds)
	}
	if got := string(rawBytes(decodeFiles(t, path))); got != "a\n\nno newline" {
		t.Fatalf("read back %q", got)
	}
}

// Capture on a closed Writer (or a failing disk) still drains its reader,
// so the app never blocks, and reports what was lost.
func TestCaptureDrainsWhenWritesFail(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		w := openWriter(t, Path(t.TempDir(), "app", 0, Stdout), Options{})
		w.Close()
		r := bytes.NewReader(numbered40(0, 100))
		err := w.Capture(r)
		if !errors.Is(err, os.ErrClosed) || r.Len() != 0 {
			t.Fatalf("Capture = %v with %d bytes unread; want os.ErrClosed, all read", err, r.Len())
		}
	})
	t.Run("disk full", func(t *testing.T) {
		if _, err := os.Stat("/dev/full"); err != nil {
			t.Skip("no /dev/full")
		}
		w := openWriter(t, "/dev/full", Options{})
		r := &chunkReader{data: numbered40(0, 1000)}
		err := w.Capture(r)
		if err == nil || !strings.Contains(err.Error(), "could not be written") || len(r.data) != 0 {
			t.Fatalf("Capture = %v with %d bytes unread", err, len(r.data))
		}
	})
}
