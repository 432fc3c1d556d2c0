package keeper

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/epoll"
)

// wirePoller reads the daemon side of every instance of a keeper process
// with one goroutine: their sockets' accepts and the daemons' commands,
// through one epoll set. A keeper process of a thousand instances would
// otherwise hold two thousand goroutines parked in accept and read, each
// with a stack of 4 KiB or more.
//
// The poller owns the descriptors it watches (duplicates), and closes
// them itself, on its goroutine, so no read ever races a close. The
// callbacks run on that goroutine and must not wait: not for the poller,
// and not for an instance's owner loop either (one slow instance would
// hold up every other's daemon).
type wirePoller struct {
	set  *epoll.Set // entries by token; woken for removals and the end
	done chan struct{}

	mu       sync.Mutex // guards the fields below (add and remove come from any goroutine)
	next     int32
	entries  map[int32]*wireEntry
	kicks    []*wireEntry // entries with lines read before they were added
	removals []*wireEntry
	ending   bool
}

// wireEntry is a listening socket (accept set) or a connection (line set).
type wireEntry struct {
	token int32
	fd    int

	accept func(fd int) // a connection accepted: non-blocking, close-on-exec; the callee's
	r      *wireReader
	line   func(line []byte, r *wireReader) bool // false ends the connection
	end    func(err error)                       // once, when a connection ends

	ended bool // only the poller's goroutine reads or writes it
}

func newWirePoller() (*wirePoller, error) {
	set, err := epoll.New()
	if err != nil {
		return nil, fmt.Errorf("starting the wire poller: %w", err)
	}
	w := &wirePoller{set: set, done: make(chan struct{}), entries: map[int32]*wireEntry{}}
	go w.loop()
	return w, nil
}

// listen watches a duplicate of ln's socket and calls accept with each
// connection. ln itself may be closed at once.
func (w *wirePoller) listen(ln *net.UnixListener, accept func(fd int)) (*wireEntry, error) {
	fd, err := dupSocket(ln)
	if err != nil {
		return nil, err
	}
	return w.add(&wireEntry{fd: fd, accept: accept})
}

// read watches fd, a connected socket the poller now owns, and calls line
// with each line read until line returns false, EOF or an error; then end.
// r, if not nil, holds what was read from fd before (its lines come
// first); the poller takes it over unless it fails.
func (w *wirePoller) read(fd int, r *wireReader, line func([]byte, *wireReader) bool, end func(error)) (*wireEntry, error) {
	kick := r != nil && (len(r.buf) > 0 || r.err != nil)
	if r == nil {
		r = &wireReader{}
	}
	e, err := w.add(&wireEntry{fd: fd, r: r, line: line, end: end})
	if err != nil {
		return nil, err // r stays the caller's
	}
	if kick {
		// Lines already read wait for no readiness: the loop serves them.
		w.mu.Lock()
		w.kicks = append(w.kicks, e)
		w.mu.Unlock()
		w.signal()
	}
	return e, nil
}

func (w *wirePoller) add(e *wireEntry) (*wireEntry, error) {
	w.mu.Lock()
	if w.ending {
		w.mu.Unlock()
		unix.Close(e.fd)
		return nil, errors.New("the wire poller has ended")
	}
	w.next++
	e.token = w.next
	w.entries[e.token] = e
	w.mu.Unlock()
	if err := w.set.Add(e.fd, e.token); err != nil {
		w.mu.Lock()
		delete(w.entries, e.token)
		w.mu.Unlock()
		unix.Close(e.fd)
		return nil, err
	}
	return e, nil
}

// remove stops watching e and closes its descriptor (a connection's end
// is called with net.ErrClosed), soon, on the poller's goroutine.
func (w *wirePoller) remove(e *wireEntry) {
	w.mu.Lock()
	if !w.ending {
		w.removals = append(w.removals, e)
	}
	w.mu.Unlock()
	w.signal()
}

// close ends every entry and the poller.
func (w *wirePoller) close() {
	w.mu.Lock()
	already := w.ending
	w.ending = true
	w.mu.Unlock()
	if !already {
		w.signal()
	}
	<-w.done
}

func (w *wirePoller) signal() { w.set.Wake() }

func (w *wirePoller) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 64)
	var ready []int32
	for {
		var woken bool
		var err error
		ready, woken, err = w.set.Wait(events, ready)
		if err != nil {
			w.mu.Lock()
			w.ending = true
			w.mu.Unlock()
			woken = true
		}
		for _, token := range ready {
			w.mu.Lock()
			e := w.entries[token]
			w.mu.Unlock()
			if e != nil {
				w.serve(e)
			}
		}
		if !woken {
			continue
		}
		w.mu.Lock()
		kicks, removals, ending := w.kicks, w.removals, w.ending
		w.kicks, w.removals = nil, nil
		var all []*wireEntry
		if ending {
			for _, e := range w.entries {
				all = append(all, e)
			}
		}
		w.mu.Unlock()
		for _, e := range kicks {
			if !e.ended {
				w.lines(e, nil)
			}
		}
		for _, e := range append(removals, all...) {
			w.finish(e, net.ErrClosed)
		}
		if ending {
			w.set.Close()
			return
		}
	}
}

// serve handles a ready entry: every pending connection of a listener, or
// one read of a connection and the lines it completed.
func (w *wirePoller) serve(e *wireEntry) {
	if e.accept != nil {
		for {
			fd, _, err := unix.Accept4(e.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				return // all taken
			}
			if err != nil {
				// Out of descriptors, say: the connection stays queued,
				// and the listener, level-triggered, would wake the loop
				// at once again. It rests a while instead.
				w.rest(e)
				return
			}
			e.accept(fd)
		}
	}
	again, err := e.r.recv(e.fd)
	if again {
		return
	}
	w.lines(e, err)
}

// lines hands e's complete lines to its line callback, and ends e after
// err (a read's) or a line that was refused.
func (w *wirePoller) lines(e *wireEntry, err error) {
	for err == nil {
		line, ok := e.r.buffered()
		if !ok {
			err = e.r.err
			break
		}
		if !e.line(line, e.r) {
			err = net.ErrClosed
		}
	}
	if err != nil {
		w.finish(e, err)
	}
}

// acceptRest is how long a listener whose accept failed is not watched.
const acceptRest = 100 * time.Millisecond

// rest stops watching e's listener for acceptRest.
func (w *wirePoller) rest(e *wireEntry) {
	w.set.Remove(e.fd)
	time.AfterFunc(acceptRest, func() {
		// Under mu: finish removes e from entries before it closes fd.
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.entries[e.token] == e && !w.ending {
			_ = w.set.Add(e.fd, e.token)
		}
	})
}

// finish stops watching e, closes its descriptor and tells its end.
func (w *wirePoller) finish(e *wireEntry, err error) {
	if e.ended {
		return
	}
	e.ended = true
	w.mu.Lock()
	delete(w.entries, e.token)
	w.mu.Unlock()
	w.set.Remove(e.fd)
	unix.Close(e.fd)
	if e.r != nil {
		e.r.close()
	}
	if e.end != nil {
		e.end(err)
	}
}

// dupSocket returns a close-on-exec duplicate of c's socket; it shares
// the socket's non-blocking mode, which Go set.
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("duplicating a socket: %w", err)
	}
	fd := -1
	cerr := rc.Control(func(u uintptr) {
		fd, err = unix.FcntlInt(u, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, fmt.Errorf("duplicating a socket: %w", cerr)
	}
	if err != nil {
		return -1, fmt.Errorf("duplicating a socket: %w", err)
	}
	return fd, nil
}

// connForWrites returns a net.UnixConn on a duplicate of fd, an accepted
// connection whose reads the poller does: the writer's end.
func connForWrites(fd int) (*net.UnixConn, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating a connection: %w", err)
	}
	f := os.NewFile(uintptr(nfd), "daemon")
	defer f.Close() // FileConn holds a duplicate of its own
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("duplicating a connection: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("duplicating a connection: not a unix socket")
	}
	return uc, nil
}
