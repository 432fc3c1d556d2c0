package sdnotify

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxDatagram bounds one message; longer datagrams are truncated.
const maxDatagram = 64 << 10

// Message is one datagram: its assignments, the last one winning when a
// key repeats. Lines without '=' are ignored.
type Message struct {
	Vars map[string]string
}

// Parse reads one datagram.
func Parse(b []byte) Message {
	m := Message{Vars: map[string]string{}}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		m.Vars[string(k)] = string(v)
	}
	return m
}

// Ready reports READY=1: the service finished starting up.
func (m Message) Ready() bool { return m.Vars["READY"] == "1" }

// Stopping reports STOPPING=1: the service is shutting down.
func (m Message) Stopping() bool { return m.Vars["STOPPING"] == "1" }

// Reloading reports RELOADING=1: the service is reloading its config.
func (m Message) Reloading() bool { return m.Vars["RELOADING"] == "1" }

// Watchdog reports WATCHDOG=1: a keep-alive ping.
func (m Message) Watchdog() bool { return m.Vars["WATCHDOG"] == "1" }

// Status returns the STATUS= text and whether the message had one.
func (m Message) Status() (string, bool) {
	s, ok := m.Vars["STATUS"]
	return s, ok
}

// MainPID returns MAINPID=, the pid the service says is its main process,
// and whether the message had a valid one.
func (m Message) MainPID() (int, bool) {
	n, err := strconv.Atoi(m.Vars["MAINPID"])
	return n, err == nil && n > 0
}

// Server receives notify datagrams on one socket. Its methods are safe for
// concurrent use.
type Server struct {
	path    string
	conn    *net.UnixConn
	msgs    chan Message
	closing chan struct{}
	done    chan struct{}
	held    *Message // read but not delivered when closing came; set before done is closed
	once    sync.Once
}

// Listen creates the socket at path, replacing a stale socket file there
// (but nothing else), and starts receiving. Messages are delivered on
// Messages in the order they arrived.
func Listen(path string) (*Server, error) {
	if path == "" {
		return nil, errors.New("notify socket: empty path")
	}
	if path[0] != '@' {
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode().Type() != fs.ModeSocket {
				return nil, fmt.Errorf("notify socket %s: a file that is not a socket is in the way", path)
			}
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("notify socket: removing stale %s: %w", path, err)
			}
		}
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	s := &Server{
		path:    path,
		conn:    conn,
		msgs:    make(chan Message, 32),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.receive()
	return s, nil
}

// Path is the socket's address, the value for NOTIFY_SOCKET.
func (s *Server) Path() string { return s.path }

// Messages delivers what the service sent. It is closed after Close, or
// if the socket fails.
func (s *Server) Messages() <-chan Message { return s.msgs }

func (s *Server) receive() {
	defer close(s.done)
	defer close(s.msgs)
	buf := make([]byte, maxDatagram)
	for {
		n, _, err := s.conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		m := Parse(buf[:n])
		select {
		case s.msgs <- m:
		case <-s.closing:
			s.held = &m
			return
		}
	}
}

// Shutdown stops receiving and returns, in order, every message that was
// sent before it and not yet taken from Messages — those in the channel
// and those still queued on the socket — so that what a service said just
// before it exited is not lost. It then closes the socket and removes its
// file. It must not run while another goroutine receives from Messages,
// and returns nil if the Server was closed before.
func (s *Server) Shutdown() ([]Message, error) {
	var out []Message
	err := s.close(func() {
		for m := range s.msgs {
			out = append(out, m)
		}
		if s.held != nil {
			out = append(out, *s.held)
		}
		out = append(out, s.readQueued()...)
	})
	return out, err
}

// readQueued reads the datagrams waiting on the socket, without blocking.
func (s *Server) readQueued() []Message {
	var out []Message
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return nil
	}
	buf := make([]byte, maxDatagram)
	rc.Control(func(fd uintptr) {
		for {
			n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return
			}
			out = append(out, Parse(buf[:n]))
		}
	})
	return out
}

// Close stops receiving, waits until the receiving goroutine is gone, and
// removes the socket file. Messages not yet received are dropped (see
// Shutdown). It may be called more than once.
func (s *Server) Close() error {
	return s.close(nil)
}

func (s *Server) close(collect func()) error {
	var err error
	s.once.Do(func() {
		close(s.closing)
		// Wake a read in progress; what is queued stays queued.
		s.conn.SetReadDeadline(time.Unix(1, 0))
		<-s.done
		if collect != nil {
			collect()
		}
		err = s.conn.Close()
		if s.path[0] != '@' {
			if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
				err = rerr
			}
		}
	})
	if err != nil {
		return fmt.Errorf("closing notify socket: %w", err)
	}
	return nil
}
