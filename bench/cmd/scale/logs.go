package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keel-run/keel/bench/core"
)

// logOptions are the -log flags.
type logOptions struct {
	instances, lines, rate, burst int
	bin                           string // bench/apps/writer, built
}

// logRow is one manager's run of the log writers.
type logRow struct {
	manager    string
	instances  int
	rate       int           // lines a second, each writer
	online     time.Duration // start command → all writers online
	writeMed   time.Duration // a writer's time from go to its last line: median
	writeMax   time.Duration //   and slowest
	writeErrs  int           // writes that failed, summed over the writers
	done       int           // writers that reported
	inFiles    time.Duration // go → every written line found in the files (or the last count)
	cpu        float64       // the manager's CPU from go to the last writer done, % of a core
	loss       core.Loss
	files      int
	err        error
	gaveUpWait bool // lines were still missing when the wait for them ended
}

func (r logRow) String() string {
	s := fmt.Sprintf("%d writers online in %.1f s; wrote %d lines (writer time median %.1f s, max %.1f s, %d write errors); "+
		"found %d in %d files after %.1f s, lost %d, duplicated %d, writers with gaps %d; manager CPU while writing %.0f %%",
		r.done, r.online.Seconds(), r.loss.Written, r.writeMed.Seconds(), r.writeMax.Seconds(), r.writeErrs,
		r.loss.Found, r.files, r.inFiles.Seconds(), r.loss.Lost, r.loss.Duplicates, r.loss.WithGaps, r.cpu)
	if len(r.loss.Gaps) > 0 {
		s += "; " + strings.Join(r.loss.Gaps, "; ")
	}
	return s
}

// measureLogs starts o.instances writers under m, lets them all write at
// once, and compares the lines each wrote with the lines in m's log files.
// The caller closes m.
func measureLogs(ctx context.Context, m manager, o logOptions, tmp string) logRow {
	r := logRow{manager: m.Name(), instances: o.instances, rate: o.rate}
	writeFor := time.Duration(o.lines) * time.Second / time.Duration(o.rate)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute+5*writeFor)
	defer cancel()
	dir, err := os.MkdirTemp(tmp, "writers-"+m.Name()+"-*")
	if err != nil {
		r.err = err
		return r
	}
	a := core.App{Name: "w", Script: o.bin, Interpreter: "none", Instances: o.instances,
		Args: []string{"-dir", dir, "-lines", strconv.Itoa(o.lines), "-rate", strconv.Itoa(o.rate), "-burst", strconv.Itoa(o.burst)}}
	t0 := time.Now()
	if err := m.Start(ctx, a); err != nil {
		r.err = err
		return r
	}
	if err := waitOnline(ctx, m, o.instances, nil); err != nil {
		r.err = err
		return r
	}
	r.online = time.Since(t0)
	pids, err := managerPids(m)
	if err != nil {
		r.err = err
		return r
	}
	c0 := cpuTicks(pids)
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		r.err = err
		return r
	}
	start := time.Now()
	// Every writer reports within writeFor unless the manager holds it
	// back (a full pipe); wait up to 4× that, plus a minute.
	written, took, errs, err := waitDone(ctx, dir, o.instances, 4*writeFor+time.Minute)
	r.cpu = cpuPercent(cpuTicks(pids)-c0, time.Since(start))
	r.done, r.writeErrs = len(written), errs
	if len(took) > 0 {
		slices.Sort(took)
		r.writeMed, r.writeMax = took[len(took)/2], took[len(took)-1]
	}
	if err != nil {
		r.err = err
		return r
	}
	// The last lines may still be on their way to the files: count until
	// none is missing, or until 30 s after the last writer finished.
	for deadline := time.Now().Add(30 * time.Second); ; {
		lines, err := core.CountLines(m.LogDir())
		if err != nil {
			r.err = err
			return r
		}
		r.loss, r.files, r.inFiles = lines.Compare(written), lines.Files, time.Since(start)
		if r.loss.Lost == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.gaveUpWait = true
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			r.err = err
			return r
		}
	}
	return r
}

// waitDone waits until n writers have written their done files in dir, or
// limit passes, and returns the lines each wrote (by pid), how long each
// took and their write errors, summed.
func waitDone(ctx context.Context, dir string, n int, limit time.Duration) (written map[int]int, took []time.Duration, errs int, err error) {
	deadline := time.Now().Add(limit)
	for {
		written, took, errs = map[int]int{}, nil, 0
		paths, _ := filepath.Glob(filepath.Join(dir, "*.done"))
		for _, p := range paths {
			pid, err1 := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".done"))
			b, err2 := os.ReadFile(p)
			f := strings.Fields(string(b))
			if err1 != nil || err2 != nil || len(f) != 3 {
				continue // being written
			}
			w, _ := strconv.Atoi(f[0])
			e, _ := strconv.Atoi(f[1])
			s, _ := strconv.ParseFloat(f[2], 64)
			written[pid] = w
			errs += e
			took = append(took, time.Duration(s*float64(time.Second)))
		}
		if len(written) >= n {
			return written, took, errs, nil
		}
		if time.Now().After(deadline) {
			return written, took, errs, fmt.Errorf("%d of %d writers finished within %v", len(written), n, limit)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return written, took, errs, err
		}
	}
}
