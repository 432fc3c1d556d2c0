package logs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The 200,000-line case: a real child process prints 200,000 numbered lines
// into a real pipe as fast as it can and exits at once (normally, with
// os.Exit(3), or by panicking); every line must be in the log once, in
// order.
func TestCaptureChildProcess200kLines(t *testing.T) {
	cases := []struct {
		helper   string
		exitCode int
		opts     Options
	}{
		{"lines-exit0", 0, Options{}},
		{"lines-exit3", 3, Options{}},
		{"lines-panic", 2, Options{}},
		// Rotating every 256 KiB: ~35 files, all kept.
		{"lines-exit0", 0, Options{MaxSize: 256 << 10, Keep: 100}},
	}
	var want bytes.Buffer
	for i := range helperLines {
		want.Write(numberedLine(i))
	}
	for _, tc := range cases {
		name := tc.helper
		if tc.opts.MaxSize > 0 {
			name += "-rotating"
		}
		t.Run(name, func(t *testing.T) {
			home := t.TempDir()
			code := runCapturedChild(t, home, tc.helper, tc.opts)
			if code != tc.exitCode {
				t.Fatalf("child exit code %d, want %d", code, tc.exitCode)
			}
			outPath := Path(home, "app", 0, Stdout)

			// Through the file itself: every record well-formed, one line each, in order.
			n := 0
			for _, f := range logFiles(t, outPath) {
				for _, rec := range fileLines(t, f) {
					r, ok := parseRecord(rec)
					if !ok || r.kind != kindLine || r.id != "" {
						t.Fatalf("%s: bad record %q", f, rec)
					}
					if wantLine := numberedLine(n); !bytes.Equal(append(r.payload, '\n'), wantLine) {
						t.Fatalf("%s: record %d is %q, want %q", f, n, r.payload, wantLine)
					}
					n++
				}
			}
			if n != helperLines {
				t.Fatalf("log holds %d lines, want %d", n, helperLines)
			}
			if tc.opts.MaxSize > 0 {
				files := logFiles(t, outPath)
				if len(files) < 10 {
					t.Fatalf("only %d files: the rotation case did not rotate", len(files))
				}
				for _, f := range files {
					if st, _ := os.Stat(f); st.Size() > tc.opts.MaxSize {
						t.Fatalf("%s is %d bytes, over MaxSize %d", f, st.Size(), tc.opts.MaxSize)
					}
				}
			}

			// Through Print --raw: exactly the bytes the child wrote.
			var raw bytes.Buffer
			err := Print(context.Background(), &raw, PrintOptions{Home: home, Target: targetAll, Lines: -1, Raw: true})
			if err != nil {
				t.Fatal(err)
			}
			// stdout and stderr are merged by time; the panic's stack
			// is on stderr: split them apart again.
			stdout, stderr := splitNumbered(raw.Bytes())
			if !bytes.Equal(stdout, want.Bytes()) {
				t.Fatalf("Print raw gave %d bytes of stdout, want %d (first difference at %d)", len(stdout), want.Len(), firstDiff(stdout, want.Bytes()))
			}
			errRaw, err := TailRaw(Path(home, "app", 0, Stderr), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(stderr, errRaw) {
				t.Fatalf("Print raw gave stderr %q, want %q", stderr, errRaw)
			}
			// The last N lines, across the rotated files when rotating.
			raw.Reset()
			err = Print(context.Background(), &raw, PrintOptions{Home: home, Target: targetAll, Lines: 30000, Raw: true})
			if err != nil {
				t.Fatal(err)
			}
			if stdout, _ := splitNumbered(raw.Bytes()); tc.helper != "lines-panic" && !bytes.Equal(stdout, raw.Bytes()) {
				t.Fatalf("unexpected stderr output: %q", raw.Bytes()[firstDiff(stdout, raw.Bytes()):])
			}
			if tc.helper == "lines-panic" {
				// The panic's lines are among the last 30000 of the instance.
				raw.Reset()
				err = Print(context.Background(), &raw, PrintOptions{Home: home, Target: targetAll, Lines: 30000 + strings.Count(string(errRaw), "\n"), Raw: true})
				if err != nil {
					t.Fatal(err)
				}
				stdout, _ := splitNumbered(raw.Bytes())
				raw.Reset()
				raw.Write(stdout)
			}
			if tail := want.Bytes()[want.Len()-30000*len(numberedLine(0)):]; !bytes.Equal(raw.Bytes(), tail) {
				t.Fatalf("Print --lines 30000 gave %d bytes, want the last %d", raw.Len(), len(tail))
			}

			if tc.helper == "lines-panic" {
				stderr, err := TailRaw(Path(home, "app", 0, Stderr), 4096)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(stderr), "panic: after 200000 lines") {
					t.Fatalf("stderr tail lacks the panic:\n%s", stderr)
				}
			}
		})
	}
}

// runCapturedChild runs a helper with stdout and stderr on real pipes that
// Writers capture, as the keeper does, and returns its exit code once both
// Captures have returned.
func runCapturedChild(t *testing.T, home, helper string, opts Options) int {
	t.Helper()
	type stream struct {
		w    *Writer
		r, c *os.File // our read end, the child's write end
	}
	var streams []stream
	for _, name := range []string{Stdout, Stderr} {
		w, err := OpenWriter(Path(home, "app", 0, name), opts)
		if err != nil {
			t.Fatal(err)
		}
		r, c, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, stream{w, r, c})
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+helper)
	cmd.Stdout, cmd.Stderr = streams[0].c, streams[1].c
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	captured := make(chan error, len(streams))
	for _, s := range streams {
		s.c.Close()
		go func() { captured <- s.w.Capture(s.r) }()
	}
	waitErr := cmd.Wait()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for range streams {
		select {
		case err := <-captured:
			if err != nil {
				t.Errorf("Capture: %v", err)
			}
		case <-deadline.C:
			t.Fatal("Capture did not return after the child exited")
		}
	}
	for _, s := range streams {
		s.r.Close()
		if err := s.w.Close(); err != nil {
			t.Error(err)
		}
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return 0
	case errors.As(waitErr, &exitErr):
		return exitErr.ExitCode()
	}
	t.Fatal(waitErr)
	return -1
}

// splitNumbered separates the numbered lines of the helpers' stdout from
// the other lines.
func splitNumbered(b []byte) (numbered, other []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b) - 1
		}
		l := b[:i+1]
		b = b[i+1:]
		if len(l) == len("line 000000\n") && bytes.HasPrefix(l, []byte("line ")) {
			numbered = append(numbered, l...)
		} else {
			other = append(other, l...)
		}
	}
	return numbered, other
}
