package logs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/epoll"
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
	set  *epoll.Set // streams by fd; woken for CloseStream and Close
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

// NewPoller starts a Poller; Close ends it.
func NewPoller() (*Poller, error) {
	set, err := epoll.New()
	if err != nil {
		return nil, fmt.Errorf("starting the log poller: %w", err)
	}
	p := &Poller{set: set, done: make(chan struct{}), streams: map[int32]*Stream{}}
	go p.loop()
	return p, nil
}

// Capture records what f, the read end of a pipe, delivers into w until
// EOF, and then closes it; Done tells when, and so does ended, if not nil,
// called on the Poller's goroutine (it must not block). It takes f over:
// f is closed at once (its descriptor was duplicated). On an error f is
// left open, for the caller to capture another way.
func (p *Poller) Capture(w *Writer, f *os.File, ended func(error)) (*Stream, error) {
	fd, err := dupNonblock(f)
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
	if err := p.set.Add(fd, int32(fd)); err != nil {
		p.mu.Lock()
		delete(p.streams, int32(fd))
		p.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("capturing %s: %w", w.path, err)
	}
	f.Close()
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

func (p *Poller) signal() { p.set.Wake() }

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	var ready []int32
	for {
		var woken bool
		var err error
		ready, woken, err = p.set.Wait(events, ready)
		if err != nil {
			// Not expected with valid descriptors; end every stream
			// rather than spin.
			p.mu.Lock()
			p.ending = true
			p.mu.Unlock()
			woken = true
		}
		for _, fd := range ready {
			p.mu.Lock()
			s := p.streams[fd]
			p.mu.Unlock()
			if s != nil {
				p.read(s)
			}
		}
		if !woken {
			continue
		}
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
			p.set.Close()
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
	p.set.Remove(s.fd)
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
