package logs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Poller captures many pipes with one goroutine: it waits on all of them
// in one epoll set and records what each one has, as Capture would. A
// keeper process of a thousand instances would otherwise hold two
// thousand goroutines parked in reads (a stack of some kilobytes each).
//
// Each stream is read at most once per wake, so a chatty app cannot
// starve a quiet one; its lines are written before the next stream is
// read, as Capture writes them, so the files hold everything read when a
// stream's Done is closed.
type Poller struct {
	epfd int
	wake int // an eventfd: Stream.Close or Poller.Close waits for the loop
	done chan struct{}

	mu      sync.Mutex // streams is read by the loop, added to by Capture
	streams map[int32]*Stream
	closing []*Stream // asked to end before EOF
	ending  bool
}

// Stream is one pipe a Poller captures.
type Stream struct {
	fd   int
	c    *capturer
	buf  []byte // nil while no part of a line is held
	held int
	err  error
	done chan struct{}

	ended func(error)
}

// wakeToken is the epoll token of the eventfd (streams use their fd).
const wakeToken = -1

// NewPoller starts a Poller; Close ends it.
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("starting the log poller: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("starting the log poller: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeToken}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("starting the log poller: %w", err)
	}
	p := &Poller{epfd: epfd, wake: wake, done: make(chan struct{}), streams: map[int32]*Stream{}}
	go p.loop()
	return p, nil
}

// Capture records what f, the read end of a pipe, delivers into w until
// EOF, and then closes it; Done tells when, and so does ended, if not nil,
// called on the Poller's goroutine (it must not block). It takes f over:
// f is closed at once (its descriptor was duplicated).
func (p *Poller) Capture(w *Writer, f *os.File, ended func(error)) (*Stream, error) {
	fd, err := dupNonblock(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("capturing %s: %w", w.path, err)
	}
	s := &Stream{fd: fd, c: newCapturer(w), ended: ended, done: make(chan struct{})}
	p.mu.Lock()
	if p.ending {
		p.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("capturing %s: the log poller is closed", w.path)
	}
	p.streams[int32(fd)] = s
	p.mu.Unlock()
	// Level-triggered: a stream with more than one read's worth is seen
	// again at the next wake.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.streams, int32(fd))
		p.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("capturing %s: %w", w.path, err)
	}
	return s, nil
}

// dupNonblock returns a non-blocking duplicate of f's descriptor, outside
// the Go runtime's poller.
func dupNonblock(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(u uintptr) {
		fd, err = unix.FcntlInt(u, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Done is closed once the stream ended (EOF, a read error or Close) and
// everything read was written.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is what Capture would have returned; valid once Done is closed.
func (s *Stream) Err() error { return s.err }

// CloseStream ends s before EOF, as closing the pipe ends a Capture:
// what the pipe holds now is still recorded. Err is then os.ErrClosed.
func (p *Poller) CloseStream(s *Stream) {
	p.mu.Lock()
	if !p.ending {
		p.closing = append(p.closing, s)
	}
	p.mu.Unlock()
	p.signal()
}

// Close ends every stream still open (as CloseStream) and the Poller.
func (p *Poller) Close() {
	p.mu.Lock()
	already := p.ending
	p.ending = true
	p.mu.Unlock()
	if !already {
		p.signal()
	}
	<-p.done
}

func (p *Poller) signal() {
	var one = [8]byte{1}
	// EAGAIN: the counter is already set, so the loop wakes anyway.
	_, _ = unix.Write(p.wake, one[:])
}

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Not expected with valid descriptors; end every stream
			// rather than spin.
			p.mu.Lock()
			p.ending = true
			p.mu.Unlock()
		}
		woken := false
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == wakeToken {
				woken = true
				continue
			}
			p.mu.Lock()
			s := p.streams[ev.Fd]
			p.mu.Unlock()
			if s != nil {
				p.read(s)
			}
		}
		if !woken && err == nil {
			continue
		}
		var buf [8]byte
		_, _ = unix.Read(p.wake, buf[:])
		p.mu.Lock()
		closing, ending := p.closing, p.ending
		p.closing = nil
		var all []*Stream
		if ending {
			for _, s := range p.streams {
				all = append(all, s)
			}
		}
		p.mu.Unlock()
		for _, s := range append(closing, all...) {
			p.drain(s)
		}
		if ending {
			unix.Close(p.epfd)
			unix.Close(p.wake)
			return
		}
	}
}

// read does one read of s and records it; at EOF or an error s ends.
func (p *Poller) read(s *Stream) {
	if s.buf == nil {
		s.buf = getBuf()
	}
	n, err := readFd(s.fd, s.buf[s.held:])
	if errors.Is(err, unix.EAGAIN) {
		p.release(s)
		return
	}
	if n > 0 {
		s.held = s.c.consume(s.buf, s.held, n)
	}
	switch {
	case err != nil:
		p.end(s, err)
	case n == 0:
		p.end(s, io.EOF)
	default:
		p.release(s)
	}
}

// drain records what s's pipe holds now and ends it (CloseStream, Close).
func (p *Poller) drain(s *Stream) {
	p.mu.Lock()
	open := p.streams[int32(s.fd)] == s
	p.mu.Unlock()
	if !open {
		return // it reached EOF first
	}
	for {
		if s.buf == nil {
			s.buf = getBuf()
		}
		n, err := readFd(s.fd, s.buf[s.held:])
		if n > 0 {
			s.held = s.c.consume(s.buf, s.held, n)
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			p.end(s, os.ErrClosed)
			return
		case err != nil:
			p.end(s, err)
			return
		case n == 0:
			p.end(s, io.EOF)
			return
		}
	}
}

// release gives back s's buffer while no part of a line is held.
func (p *Poller) release(s *Stream) {
	if s.held == 0 && s.buf != nil {
		putBuf(s.buf)
		s.buf = nil
	}
}

// end records the rest of s's last line, closes its pipe and tells Done.
func (p *Poller) end(s *Stream, rerr error) {
	p.mu.Lock()
	delete(p.streams, int32(s.fd))
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	unix.Close(s.fd)
	var held []byte
	if s.buf != nil {
		held = s.buf[:s.held]
	}
	s.err = s.c.end(held, rerr)
	if s.buf != nil {
		putBuf(s.buf)
		s.buf = nil
	}
	close(s.done)
	if s.ended != nil {
		s.ended(s.err)
	}
}

func readFd(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return max(n, 0), err
		}
	}
}
