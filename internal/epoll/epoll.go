// Package epoll is the low half of a reactor that one goroutine runs: an
// epoll set of descriptors named by tokens, and a wake-up other
// goroutines can send it. The pollers of a keeper process (log capture,
// daemon connections) are built on it, so that a thousand idle instances
// cost no goroutine each.
package epoll

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// wakeToken is the eventfd's token; callers' tokens are ≥ 0.
const wakeToken = -1

// Set is an epoll set with a wake-up. Add, Remove and Wake may be called
// from any goroutine; Wait from the one that runs the set.
type Set struct {
	epfd int
	wake int // an eventfd
}

// New returns a Set; Close releases it.
func New() (*Set, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating an epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating an epoll set: %w", err)
	}
	s := &Set{epfd: epfd, wake: wake}
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
	n, err := unix.EpollWait(s.epfd, events, -1)
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

// Close releases the set (not the descriptors it watched).
func (s *Set) Close() {
	unix.Close(s.epfd)
	unix.Close(s.wake)
}
