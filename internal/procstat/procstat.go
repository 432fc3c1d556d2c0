package procstat

import (
	"os"
	"time"
)

// Stat is one measurement of a process and its descendants.
type Stat struct {
	// RSS is the resident memory of the process and all its descendants,
	// in bytes, summed.
	RSS int64
	// CPU is the tree's CPU use in percent of one core (100 = one core
	// busy) since the previous Sample that included this pid for the same
	// process. It is 0 on the first sample of a process.
	CPU float64
	// Procs is the number of processes counted: 1 plus the descendants.
	Procs int
	// CPUSeconds is the CPU time, user and system, the tree's live
	// processes have used so far (a counter, for /metrics).
	CPUSeconds float64
}

// Sampler measures sets of process trees and remembers each tree's CPU time
// between calls, to turn it into a percentage.
//
// A Sampler is not safe for concurrent use: one goroutine (the daemon's
// stats loop) calls Sample and publishes the result. The zero value is
// ready to use.
type Sampler struct {
	// Now is the clock; nil means time.Now. Tests may set it before the
	// first Sample.
	Now func() time.Time

	r          reader
	hz         uint64
	noChildren bool // the kernel has no /proc/<pid>/task/<tid>/children
	prev, next map[int]last
	stack      []int
}

// last is what a Sampler remembers of a tree for the next call.
type last struct {
	start uint64 // root's starttime: a different value means a reused pid
	ticks uint64
	at    time.Time
}

// NewSampler returns a ready Sampler; it is the same as new(Sampler).
func NewSampler() *Sampler { return new(Sampler) }

// Sample measures each pid's process tree. A pid that does not exist (any
// more) is left out of the result; so is a pid whose /proc entry cannot be
// read. A pid that was in an earlier call but is not in this one is
// forgotten. The returned map is the caller's.
func (s *Sampler) Sample(pids []int) map[int]Stat {
	if s.hz == 0 {
		s.hz = clockTicks()
		s.prev = make(map[int]last)
		s.next = make(map[int]last)
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	page := int64(os.Getpagesize())
	var childMap map[int][]int // built once per call, only on old kernels
	out := make(map[int]Stat, len(pids))
	clear(s.next)
	for _, pid := range pids {
		t, err := s.tree(pid, &childMap)
		if err != nil {
			continue
		}
		st := Stat{RSS: t.pages * page, Procs: t.procs, CPUSeconds: float64(t.ticks) / float64(s.hz)}
		if p, ok := s.prev[pid]; ok && p.start == t.start && now.After(p.at) && t.ticks > p.ticks {
			cpu := float64(t.ticks-p.ticks) / float64(s.hz)
			st.CPU = cpu / now.Sub(p.at).Seconds() * 100
		}
		out[pid] = st
		s.next[pid] = last{start: t.start, ticks: t.ticks, at: now}
	}
	s.prev, s.next = s.next, s.prev
	return out
}

// treeTotals is one process tree, summed.
type treeTotals struct {
	start, ticks uint64
	pages        int64
	procs        int
}

// tree sums pid and its descendants. childMap is the /proc scan, built on
// first need when the kernel has no children files.
func (s *Sampler) tree(pid int, childMap *map[int][]int) (treeTotals, error) {
	root, err := s.r.stat(pid)
	if err != nil {
		return treeTotals{}, err
	}
	t := treeTotals{start: root.start, ticks: root.ticks, pages: root.rssPgs, procs: 1}
	s.stack = s.stack[:0]
	if !s.noChildren {
		var ok bool
		s.stack, ok = s.r.children(pid, s.stack)
		if !ok {
			s.noChildren = true
		}
	}
	if s.noChildren {
		if *childMap == nil {
			*childMap = s.r.childMap()
		}
		s.stack = append(s.stack[:0], (*childMap)[pid]...)
	}
	for n := 0; len(s.stack) > 0 && n < maxTree; n++ {
		c := s.stack[len(s.stack)-1]
		s.stack = s.stack[:len(s.stack)-1]
		cs, err := s.r.stat(c)
		if err != nil {
			continue // exited since we listed it
		}
		t.ticks += cs.ticks
		t.pages += cs.rssPgs
		t.procs++
		if s.noChildren {
			s.stack = append(s.stack, (*childMap)[c]...)
		} else {
			s.stack, _ = s.r.children(c, s.stack)
		}
	}
	return t, nil
}

// maxTree bounds the processes counted under one pid, so a fork bomb or a
// pid-reuse cycle cannot make a sample run away.
const maxTree = 4096

// RSS returns the resident memory of pid alone, in bytes. An error wraps
// os.ErrNotExist when there is no such process. Safe for concurrent use.
func RSS(pid int) (int64, error) {
	var r reader
	ps, err := r.stat(pid)
	if err != nil {
		return 0, err
	}
	return ps.rssPgs * int64(os.Getpagesize()), nil
}

// TreeRSS returns the resident memory of pid and all its descendants,
// summed, in bytes. An error wraps os.ErrNotExist when there is no such
// process. Safe for concurrent use; each call reads /proc afresh.
func TreeRSS(pid int) (int64, error) {
	var (
		s        Sampler
		childMap map[int][]int
	)
	t, err := s.tree(pid, &childMap)
	if err != nil {
		return 0, err
	}
	return t.pages * int64(os.Getpagesize()), nil
}
