package epoll

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A ready descriptor comes back under its token, a Wake as woken, and a
// removed descriptor no more.
func TestSetReadyWakeRemove(t *testing.T) {
	s, r, w := setAndPipe(t)
	fd := int(r.Fd())
	if err := s.Add(fd, 7); err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 8)
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ready, woken, err := waitWithin(s, events, 5*time.Second)
	if err != nil || woken || len(ready) != 1 || ready[0] != 7 {
		t.Fatalf("Wait = %v, %v, %v; want [7], not woken", ready, woken, err)
	}
	s.Remove(fd)
	s.Wake()
	ready, woken, err = s.Wait(events, ready)
	if err != nil || !woken || len(ready) != 0 {
		t.Fatalf("Wait = %v, %v, %v; want woken only (the pipe was removed)", ready, woken, err)
	}
}

// A descriptor not read to the end is ready again at the next Wait, and
// one written while Wait is parked wakes it: no event is lost between
// the look at the set and the park. A reader and a writer race here
// 20,000 times.
func TestSetWaitLosesNoEvent(t *testing.T) {
	s, r, w := setAndPipe(t)
	fd := int(r.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(fd, 3); err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 8)
	if _, err := w.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ready, woken, err := waitWithin(s, events, 5*time.Second)
		if err != nil || woken || len(ready) != 1 || ready[0] != 3 {
			t.Fatalf("Wait %d = %v, %v, %v; want [3] (the pipe holds 2 bytes, not read)", i, ready, woken, err)
		}
	}
	var b [1]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		t.Fatal(err)
	}

	const writes = 20000
	got := make(chan int)
	go func() {
		total := 0 // the "b" still in the pipe, and the writes
		var ready []int32
		buf := make([]byte, 4096)
		for total < writes+1 {
			var err error
			if ready, _, err = s.Wait(events, ready); err != nil {
				t.Errorf("Wait: %v", err)
				break
			}
			for range ready {
				for {
					n, err := unix.Read(fd, buf)
					if n <= 0 || err != nil {
						break
					}
					total += n
				}
			}
		}
		got <- total
	}()
	for range writes {
		if _, err := w.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case n := <-got:
		if n != writes+1 {
			t.Fatalf("read %d bytes, want %d", n, writes+1)
		}
	case <-time.After(20 * time.Second):
		s.Wake()
		t.Fatal("a Wait missed the last writes: still parked after 20 s")
	}
}

// waitWithin is s.Wait, ended by a Wake after d.
func waitWithin(s *Set, events []unix.EpollEvent, d time.Duration) ([]int32, bool, error) {
	type result struct {
		ready []int32
		woken bool
		err   error
	}
	c := make(chan result, 1)
	go func() {
		ready, woken, err := s.Wait(events, nil)
		c <- result{ready, woken, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-c:
		return r.ready, r.woken, r.err
	case <-t.C:
		s.Wake()
		r := <-c
		return r.ready, r.woken, errors.Join(r.err, errors.New("still waiting after "+d.String()))
	}
}

// Sets waiting hold no thread: their goroutines park in Go's poller ("IO
// wait"), not in an epoll_wait system call, where the runtime would give
// each its own thread.
func TestSetWaitHoldsNoThread(t *testing.T) {
	const sets = 50
	before := threads(t)
	type result struct {
		woken bool
		err   error
	}
	results := make(chan result, sets)
	var all []*Set
	for range sets {
		s, err := New()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
		go func() {
			events := make([]unix.EpollEvent, 4)
			_, woken, err := s.Wait(events, nil)
			results <- result{woken, err}
		}()
	}
	defer func() {
		for _, s := range all {
			s.Wake()
		}
		for range sets {
			if r := <-results; r.err != nil || !r.woken {
				t.Errorf("Wait after Wake = woken %v, %v; want woken", r.woken, r.err)
			}
		}
		for _, s := range all {
			s.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for parked := 0; parked < sets; parked = parkedInWait() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiting sets parked in Go's poller after 10 s; want all", parked, sets)
		}
		runtime.Gosched()
	}
	if n := threads(t); n >= before+sets/2 {
		t.Fatalf("%d threads with %d sets waiting, %d before; want no thread per set", n, sets, before)
	}
}

// parkedInWait counts the goroutines parked in Go's poller inside
// Set.Wait.
func parkedInWait() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "[IO wait") && strings.Contains(g, "epoll.(*Set).Wait") {
			n++
		}
	}
	return n
}

// threads is the process's thread count.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// setAndPipe returns a new Set and a pipe, all closed when the test ends.
func setAndPipe(t *testing.T) (*Set, *os.File, *os.File) {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return s, r, w
}
