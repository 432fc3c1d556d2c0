package core

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Summary describes a sample of durations.
type Summary struct {
	N                     int
	Min, Median, P90, Max time.Duration
}

// Summarize sorts a copy of ds and summarizes it; the zero Summary if ds
// is empty.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Summary{N: len(s), Min: s[0], Median: Percentile(s, 50), P90: Percentile(s, 90), Max: s[len(s)-1]}
}

// Percentile is the p-th percentile (0 ≤ p ≤ 100) of sorted, linearly
// interpolated between the closest ranks (so the median of an even count
// is the mean of the middle two). sorted must be in ascending order.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	p = min(max(p, 0), 100)
	pos := p / 100 * float64(len(sorted)-1)
	i := int(pos)
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(i)
	return sorted[i] + time.Duration(frac*float64(sorted[i+1]-sorted[i]))
}

// MedianMem is the sample with the median RSS (the lower middle for an
// even count), and the smallest and largest RSS.
func MedianMem(samples []Mem) (median Mem, minRSS, maxRSS int64) {
	if len(samples) == 0 {
		return Mem{}, 0, 0
	}
	s := slices.Clone(samples)
	slices.SortFunc(s, func(a, b Mem) int { return cmp.Compare(a.RSS, b.RSS) })
	return s[(len(s)-1)/2], s[0].RSS, s[len(s)-1].RSS
}

// ParseKB returns the value of the "<key>: <n> kB" line of a
// /proc/<pid>/status or smaps_rollup text, in bytes.
func ParseKB(text []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s line %q: want <number> kB", key, sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("%s line %q: bad number", key, sc.Text())
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no %s line (a kernel thread, or a zombie?)", key)
}

// ParseVmRSS returns the VmRSS of a /proc/<pid>/status text, in bytes.
func ParseVmRSS(status []byte) (int64, error) { return ParseKB(status, "VmRSS") }

// Mem is a process's memory, in bytes.
type Mem struct {
	RSS  int64 // VmRSS: resident pages, shared ones (the binary's text) included
	Anon int64 // RssAnon: resident anonymous pages (heap, stacks), its own
	PSS  int64 // proportional set size: shared pages divided among their sharers
}

// Add sums two Mems.
func (m Mem) Add(o Mem) Mem { return Mem{m.RSS + o.RSS, m.Anon + o.Anon, m.PSS + o.PSS} }

// ReadMem reads pid's Mem from /proc/<pid>/status and smaps_rollup.
func ReadMem(pid int) (Mem, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	var errs [3]error
	m.RSS, errs[0] = ParseKB(status, "VmRSS")
	m.Anon, errs[1] = ParseKB(status, "RssAnon")
	m.PSS, errs[2] = ParseKB(rollup, "Pss")
	return m, errors.Join(errs[:]...)
}

// Args returns the command line of pid.
func Args(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// HasEnv reports whether environ (the NUL-separated text of
// /proc/<pid>/environ) holds the entry exactly.
func HasEnv(environ []byte, entry string) bool {
	if entry == "" {
		return false
	}
	for e := range bytes.SplitSeq(environ, []byte{0}) {
		if string(e) == entry {
			return true
		}
	}
	return false
}

// PidsWithEnv lists the pids of the processes (of this uid: others'
// environ cannot be read) whose environment holds entry, such as
// "KEEL_HOME=/tmp/keel-bench-123": everything a private KEEL_HOME or
// PM2_HOME started carries it.
func PidsWithEnv(entry string) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/environ")
	var pids []int
	self := os.Getpid()
	for _, p := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == self {
			continue
		}
		if b, err := os.ReadFile(p); err == nil && HasEnv(b, entry) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// MB formats bytes as mebibytes with one decimal.
func MB(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

// Ms formats d as milliseconds with two decimals.
func Ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
