package metrics

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// Process is the daemon's own figures for the process_* and go_* families.
type Process struct {
	CPUSeconds float64
	RSS, VSize int64
	StartTime  float64 // Unix seconds
	OpenFDs    int
	MaxFDs     uint64
	Threads    int
	Goroutines uint64
	HeapAlloc  uint64
	HeapInuse  uint64
	Sys        uint64
	GCCycles   uint64
}

// ProcessReader reads the current process's figures. It keeps the boot
// time between calls; it is not safe for concurrent use.
type ProcessReader struct {
	boot float64 // Unix seconds the machine booted
	hz   float64
}

// Read returns the process's figures: /proc/self/stat, /proc/self/fd and
// runtime.ReadMemStats (a stop of the world of some microseconds; the
// runtime/metrics package would cost every keel process 15 KB at init).
func (r *ProcessReader) Read() (*Process, error) {
	if r.hz == 0 {
		r.hz = 100 // USER_HZ on every Linux Go supports
		r.boot = bootTime()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := &Process{
		Goroutines: uint64(runtime.NumGoroutine()),
		HeapAlloc:  ms.HeapAlloc, HeapInuse: ms.HeapInuse, Sys: ms.Sys, GCCycles: uint64(ms.NumGC),
	}

	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return nil, fmt.Errorf("reading the daemon's own stats: %w", err)
	}
	// Fields after the command, which is in parentheses and may hold
	// spaces: state is field 3, so f[0] is field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("reading the daemon's own stats: /proc/self/stat has no command")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 22 {
		return nil, fmt.Errorf("reading the daemon's own stats: /proc/self/stat has %d fields", len(f)+2)
	}
	num := func(field int) int64 {
		n, _ := strconv.ParseInt(string(f[field-3]), 10, 64)
		return n
	}
	p.CPUSeconds = float64(num(14)+num(15)) / r.hz
	p.Threads = int(num(20))
	p.StartTime = r.boot + float64(num(22))/r.hz
	p.VSize = num(23)
	p.RSS = num(24) * int64(os.Getpagesize())
	// Names only, unsorted: the daemon holds a descriptor per keeper.
	if d, err := os.Open("/proc/self/fd"); err == nil {
		names, _ := d.Readdirnames(-1)
		d.Close()
		p.OpenFDs = len(names) - 1 // less the one reading it
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		p.MaxFDs = lim.Cur
	}
	return p, nil
}

// bootTime is btime from /proc/stat, or a guess from the uptime if absent.
func bootTime() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err == nil {
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
				if n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil {
					return float64(n)
				}
			}
		}
	}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		return float64(time.Now().Unix() - si.Uptime)
	}
	return 0
}
