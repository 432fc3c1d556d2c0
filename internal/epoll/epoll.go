// Package epoll is the low half of a reactor that one goroutine runs: an
// epoll set of descriptors named by tokens, and a wake-up other
// goroutines can send it. The pollers of a keeper process (log capture,
// daemon connections) are built on it, so that a thousand idle instances
// cost no goroutine each.
//
// A waiting Set holds no thread: the epoll descriptor is itself watched
// by Go's poller (an epoll set is readable while it has events ready), so
// Wait parks its goroutine there as a read of a socket would, instead of
// blocking a thread in epoll_wait. Each blocked thread would cost the
// process an OS thread and the runtime's stacks for it (about 50 KiB)
// for as long as the process lives: the runtime never ends an idle one.
package epoll

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// wakeToken is the eventfd's token; callers' tokens are ≥ 0.
const wakeToken = -1

// Set is an epoll set with a wake-up. Add, Remove and Wake may be called
// from any goroutine; Wait and Close from the one that runs the set.
type Set struct {
	epfd int
	wake int // an eventfd

	file *os.File        // owns epfd
	rc   syscall.RawConn // file's
	// inPoller: file is in Go's poller, and Wait parks there; otherwise
	// (not seen on Linux) it blocks a thread in epoll_wait.
	inPoller bool
}

// New returns a Set; Close releases it.
func New() (*Set, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating an epoll set: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller; epoll_wait
	// itself ignores the flag (its timeout says how long it may wait).
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating an epoll set: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("creating an epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("creating an epoll set: %w", err)
	}
	// Only a descriptor in the poller takes a deadline: this tells
	// whether os.NewFile could register it.
	s := &Set{epfd: epfd, wake: wake, file: f, rc: rc, inPoller: f.SetReadDeadline(time.Time{}) == nil}
	if err := s.Add(wake, wakeToken); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Add watches fd for reading (level-triggered) under token.
func (s *Set) Add(fd int, token int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("watching descriptor %d: %w", fd, err)
	}
	return nil
}

// Remove stops watching fd (closing fd does that too).
func (s *Set) Remove(fd int) { _ = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil) }

// Wake makes the running Wait return with woken set.
func (s *Set) Wake() {
	one := [8]byte{1}
	_, _ = unix.Write(s.wake, one[:]) // EAGAIN: a wake is pending anyway
}

// Wait blocks until a descriptor is ready or Wake was called, and returns
// the ready tokens (in events' storage) and whether a wake came. An
// interrupted wait returns nothing and no error.
func (s *Set) Wait(events []unix.EpollEvent, ready []int32) ([]int32, bool, error) {
	n, err := s.wait(events)
	if errors.Is(err, unix.EINTR) {
		return ready[:0], false, nil
	}
	if err != nil {
		return ready[:0], false, fmt.Errorf("waiting on an epoll set: %w", err)
	}
	ready, woken := ready[:0], false
	for _, ev := range events[:n] {
		if ev.Fd == wakeToken {
			var b [8]byte
			_, _ = unix.Read(s.wake, b[:])
			woken = true
			continue
		}
		ready = append(ready, ev.Fd)
	}
	return ready, woken, nil
}

// wait fills events with what is ready, waiting for something.
//
// Go's poller watches epfd edge-triggered: it hears when an event joins
// the set, not that events are still there. So each wait first takes
// what is ready without waiting (the descriptors in the set are
// level-triggered: one not read to the end is there again), and parks
// only when nothing is: an event that comes after that look wakes the
// parked goroutine, or is seen before it parks.
func (s *Set) wait(events []unix.EpollEvent) (int, error) {
	var n int
	var werr error
	var err error
	if s.inPoller {
		err = s.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || werr != nil
		})
	} else {
		err = s.rc.Control(func(fd uintptr) {
			n, werr = unix.EpollWait(int(fd), events, -1)
		})
	}
	if err != nil {
		return 0, err
	}
	return max(n, 0), werr
}

// Close releases the set (not the descriptors it watched).
func (s *Set) Close() {
	s.file.Close()
	unix.Close(s.wake)
}
