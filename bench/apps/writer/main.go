// Command writer is the log-loss app of bench/cmd/scale (issue 14): a
// small Go program (about 1–2 MB a process, so a thousand of them fit on a
// small box) that writes numbered lines to stdout at a fixed rate, then
// reports what it wrote and idles until it is stopped.
//
//	writer -dir DIR -lines 2000 -rate 100 -burst 10
//
// It waits until DIR/go exists (so that every instance writes at the same
// time, once the bench has seen them all online), then writes -lines lines
//
//	keel-bench-writer <pid> <seq>
//
// with seq from 1, each with a write(2) of its own, -burst lines every
// -burst/-rate seconds, on an absolute schedule: a writer that a full pipe
// held back catches up rather than writing fewer lines. Then it writes
// DIR/<pid>.done: "<lines written> <write errors> <seconds from go to the
// last line>". It does not exit, so a manager's restart policy does not
// start it again.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Mark starts every line the writer writes.
const Mark = "keel-bench-writer "

func main() {
	dir := flag.String("dir", "", "directory with the go file and the done files")
	lines := flag.Int("lines", 2000, "lines to write")
	rate := flag.Int("rate", 100, "lines a second")
	burst := flag.Int("burst", 10, "lines written one after the other each tick")
	flag.Parse()
	if *dir == "" || *lines < 1 || *rate < 1 || *burst < 1 || *burst > *rate {
		fmt.Fprintln(os.Stderr, "writer: -dir is required; -lines, -rate, -burst positive, -burst ≤ -rate")
		os.Exit(2)
	}
	for {
		if _, err := os.Stat(filepath.Join(*dir, "go")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid := os.Getpid()
	prefix := strconv.AppendInt([]byte(Mark), int64(pid), 10)
	prefix = append(prefix, ' ')
	tick := time.Second * time.Duration(*burst) / time.Duration(*rate)
	start := time.Now()
	buf := make([]byte, 0, 64)
	written, failed := 0, 0
	for seq := 1; seq <= *lines; {
		for i := 0; i < *burst && seq <= *lines; i++ {
			buf = strconv.AppendInt(append(buf[:0], prefix...), int64(seq), 10)
			buf = append(buf, '\n')
			if _, err := os.Stdout.Write(buf); err != nil {
				failed++
			} else {
				written++
			}
			seq++
		}
		// The next tick on the schedule from start, not from now.
		if d := time.Until(start.Add(time.Duration(seq-1) / time.Duration(*burst) * tick)); d > 0 {
			time.Sleep(d)
		}
	}
	took := time.Since(start)
	report := fmt.Sprintf("%d %d %.3f\n", written, failed, took.Seconds())
	if err := os.WriteFile(filepath.Join(*dir, strconv.Itoa(pid)+".done"), []byte(report), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}
