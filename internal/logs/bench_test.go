package logs

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"
)

// lineSource yields n lines of 100 bytes ("\n" included), in big reads.
type lineSource struct {
	block []byte // whole lines
	left  int    // bytes still to give
}

func newLineSource(n int) *lineSource {
	line := append(bytes.Repeat([]byte("0123456789"), 10)[:99], '\n')
	return &lineSource{block: bytes.Repeat(line, 1024), left: n * len(line)}
}

func (s *lineSource) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.block[:min(len(s.block), s.left)])
	s.left -= n
	return n, nil
}

// BenchmarkCapture measures Capture of 100-byte lines into a rotating log
// (10 MiB, 5 kept, as by default): b.N lines, reported as MB/s of app
// output and lines/s. Run: go test -run '^$' -bench Capture ./internal/logs/
func BenchmarkCapture(b *testing.B) {
	path := Path(b.TempDir(), "app", 0, Stdout)
	w, err := OpenWriter(path, Options{MaxSize: 10 << 20, Keep: 5})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.SetBytes(100)
	b.ResetTimer()
	start := time.Now()
	if err := w.Capture(newLineSource(b.N)); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
}

// BenchmarkCapturePipe is BenchmarkCapture with the lines coming through a
// real pipe from another goroutine, as from an app.
func BenchmarkCapturePipe(b *testing.B) {
	path := Path(b.TempDir(), "app", 0, Stdout)
	w, err := OpenWriter(path, Options{MaxSize: 10 << 20, Keep: 5})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r, pw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.SetBytes(100)
	b.ResetTimer()
	start := time.Now()
	go func() {
		io.Copy(pw, newLineSource(b.N))
		pw.Close()
	}()
	if err := w.Capture(r); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
}
