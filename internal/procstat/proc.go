package procstat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// procStat is what we use of /proc/<pid>/stat.
type procStat struct {
	ppid   int
	ticks  uint64 // utime+stime+cutime+cstime, in clock ticks
	start  uint64 // starttime, clock ticks after boot: tells a reused pid apart
	rssPgs int64  // resident pages
}

// reader reads /proc files into a buffer it reuses. Not safe for
// concurrent use.
type reader struct {
	buf []byte
}

// errGone wraps os.ErrNotExist for a process that does not exist (any
// more).
func errGone(pid int) error {
	return fmt.Errorf("procstat: no process %d: %w", pid, os.ErrNotExist)
}

// read returns the whole content of a /proc file. The slice is valid until
// the next call. A missing file or a process that vanished mid-read gives an
// error that wraps os.ErrNotExist.
func (r *reader) read(path string) ([]byte, error) {
	if r.buf == nil {
		r.buf = make([]byte, 1024)
	}
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	for err == syscall.EINTR {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		if err == syscall.ENOENT || err == syscall.ESRCH {
			return nil, fmt.Errorf("procstat: %s: %w", path, os.ErrNotExist)
		}
		return nil, fmt.Errorf("procstat: open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = append(r.buf, make([]byte, len(r.buf))...)
		}
		m, err := syscall.Read(fd, r.buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err == syscall.ESRCH {
				return nil, fmt.Errorf("procstat: %s: %w", path, os.ErrNotExist)
			}
			return nil, fmt.Errorf("procstat: read %s: %w", path, err)
		}
		if m == 0 {
			return r.buf[:n], nil
		}
		n += m
	}
}

// stat reads /proc/<pid>/stat.
func (r *reader) stat(pid int) (procStat, error) {
	b, err := r.read("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return procStat{}, errGone(pid)
		}
		return procStat{}, err
	}
	return parseStat(pid, b)
}

// parseStat parses the content of /proc/<pid>/stat (see proc(5)). The
// command name, in parentheses, may hold spaces and parentheses itself, so
// fields are counted from the last ')'.
func parseStat(pid int, b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("procstat: pid %d: malformed stat", pid)
	}
	// Field 3 (state) is the first after ") ". We want, by proc(5)
	// numbering: 4 ppid, 14 utime, 15 stime, 16 cutime, 17 cstime,
	// 22 starttime, 24 rss.
	var (
		ps    procStat
		field = 3
		rest  = b[i+1:]
	)
	for len(rest) > 0 && field <= 24 {
		rest = bytes.TrimLeft(rest, " ")
		j := bytes.IndexAny(rest, " \n")
		if j < 0 {
			j = len(rest)
		}
		tok := rest[:j]
		rest = rest[j:]
		switch field {
		case 4:
			v, err := atoi(tok)
			if err != nil {
				return procStat{}, fmt.Errorf("procstat: pid %d: ppid: %w", pid, err)
			}
			ps.ppid = int(v)
		case 14, 15, 16, 17:
			v, err := atoi(tok)
			if err != nil {
				return procStat{}, fmt.Errorf("procstat: pid %d: cpu times: %w", pid, err)
			}
			if v > 0 { // cutime/cstime are signed in the kernel's format
				ps.ticks += uint64(v)
			}
		case 22:
			v, err := atoi(tok)
			if err != nil {
				return procStat{}, fmt.Errorf("procstat: pid %d: starttime: %w", pid, err)
			}
			ps.start = uint64(v)
		case 24:
			v, err := atoi(tok)
			if err != nil {
				return procStat{}, fmt.Errorf("procstat: pid %d: rss: %w", pid, err)
			}
			ps.rssPgs = v
		}
		field++
	}
	if field <= 24 {
		return procStat{}, fmt.Errorf("procstat: pid %d: stat has only %d fields", pid, field-1)
	}
	return ps, nil
}

// atoi parses a decimal int64 without allocating.
func atoi(b []byte) (int64, error) {
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, fmt.Errorf("bad number %q", b)
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad number %q", b)
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, nil
}

// children appends the pids of pid's children to dst, reading
// /proc/<pid>/task/<tid>/children for every thread (a child belongs to the
// thread that forked it). ok is false when the kernel has no children file
// (CONFIG_PROC_CHILDREN off); a vanished process has no children.
func (r *reader) children(pid int, dst []int) (out []int, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	f, err := os.Open(dir)
	if err != nil {
		return dst, true
	}
	tids, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return dst, true
	}
	for _, tid := range tids {
		b, err := r.read(dir + "/" + tid + "/children")
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if _, serr := os.Stat(dir + "/" + tid); serr == nil {
					return dst, false // thread is there, file is not
				}
			}
			continue // thread ended
		}
		for len(b) > 0 {
			b = bytes.TrimLeft(b, " \n")
			j := bytes.IndexAny(b, " \n")
			if j < 0 {
				j = len(b)
			}
			if j > 0 {
				if v, err := atoi(b[:j]); err == nil {
					dst = append(dst, int(v))
				}
			}
			b = b[j:]
		}
	}
	return dst, true
}

// childMap scans /proc and maps every pid to its children: the fallback
// when the kernel has no children files.
func (r *reader) childMap() map[int][]int {
	f, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	m := make(map[int][]int)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		ps, err := r.stat(pid)
		if err != nil {
			continue
		}
		m[ps.ppid] = append(m[ps.ppid], pid)
	}
	return m
}

// clockTicks returns the kernel's USER_HZ, the unit of the CPU times in
// /proc/<pid>/stat, from the auxiliary vector (AT_CLKTCK); 100 (the value
// on every mainstream Linux) if it cannot be read.
func clockTicks() uint64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	word := int(unsafe.Sizeof(uintptr(0)))
	get := func(p []byte) uint64 {
		if word == 8 {
			return binary.NativeEndian.Uint64(p)
		}
		return uint64(binary.NativeEndian.Uint32(p))
	}
	for len(b) >= 2*word {
		k, v := get(b), get(b[word:])
		b = b[2*word:]
		if k == atClkTck && v > 0 {
			return v
		}
		if k == 0 {
			break
		}
	}
	return 100
}
