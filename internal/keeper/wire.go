package keeper

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxLine bounds one protocol line; a longer one fails the connection.
const maxLine = 4 << 20

// maxWireFDs is how many descriptors one read may carry. A message carries
// at most one per listening socket of an app.
const maxWireFDs = 64

// wireReader reads the protocol's JSON lines from a unix stream socket
// together with the descriptors that travel with them as SCM_RIGHTS. The
// sender writes each line that carries descriptors with one sendmsg, so
// the descriptors arrive with the line's first byte: no later than the
// line is complete. A line that says "fds":N takes the first N
// descriptors received and not yet taken (take), in order. Not safe for
// concurrent use.
type wireReader struct {
	c   *net.UnixConn
	rc  syscall.RawConn // c's; nil if it has none (then every read fails)
	buf []byte          // read, not yet returned; nil when empty
	fds []*os.File
	err error
}

// wireBufs are what one read needs. A reader holds them only while bytes
// are there to read, from wirePool: with a reader per instance on both
// sides, a thousand idle connections would otherwise hold 1.3 MiB each.
// Lines are short (a hello is under 1 KiB); a longer one is gathered in
// buf over several reads.
type wireBufs struct {
	data []byte
	oob  []byte
}

var wirePool = sync.Pool{New: func() any {
	return &wireBufs{data: make([]byte, 1<<10), oob: make([]byte, unix.CmsgSpace(maxWireFDs*4))}
}}

func newWireReader(c *net.UnixConn) *wireReader {
	r := &wireReader{c: c}
	r.rc, r.err = c.SyscallConn()
	return r
}

// next returns the next non-empty line, without its newline. The slice is
// valid until the next call.
func (r *wireReader) next() ([]byte, error) {
	for {
		if line, ok := r.buffered(); ok {
			return line, nil
		}
		if r.err != nil {
			return nil, r.err
		}
		if err := r.read(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// A deadline is not the end of the connection.
				return nil, err
			}
			r.err = err
		}
	}
}

// buffered returns the next non-empty line already read, if there is one
// (false also once a line grew too long: r.err says so). The slice is
// valid until the next call.
func (r *wireReader) buffered() ([]byte, bool) {
	for {
		i := bytes.IndexByte(r.buf, '\n')
		if i < 0 {
			break
		}
		line := r.buf[:i]
		r.buf = r.buf[i+1:]
		if len(bytes.TrimSpace(line)) > 0 {
			return line, true
		}
	}
	if len(r.buf) > maxLine && r.err == nil {
		r.err = errors.New("a protocol line longer than 4 MiB")
	}
	if len(r.buf) == 0 {
		r.buf = nil // the line returned last may still be in use
	}
	return nil, false
}

// read appends what one recvmsg brings to buf, and takes its descriptors.
func (r *wireReader) read() error {
	var err error
	cerr := r.rc.Read(func(fd uintptr) bool {
		var again bool
		again, err = r.recv(int(fd))
		return !again
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// recv does one recvmsg on fd, a non-blocking socket, into buffers taken
// from the pool only for it: again is true when nothing was there.
func (r *wireReader) recv(fd int) (again bool, err error) {
	bufs := wirePool.Get().(*wireBufs)
	defer wirePool.Put(bufs)
	var n, oobn, flags int
	for {
		n, oobn, flags, _, err = unix.Recvmsg(fd, bufs.data, bufs.oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EAGAIN {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if oobn > 0 {
		r.takeRights(bufs.oob[:oobn])
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return false, errors.New("descriptors were dropped (too many in one message)")
	}
	if n > 0 {
		r.buf = append(r.buf, bufs.data[:n]...)
	}
	if n == 0 && oobn == 0 {
		return false, io.EOF
	}
	return false, nil
}

func (r *wireReader) takeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			// Received with MSG_CMSG_CLOEXEC (net does that). os.NewFile
			// leaves the descriptor's blocking mode alone, and so does its
			// Fd: the mode belongs to the socket every holder shares.
			r.fds = append(r.fds, os.NewFile(uintptr(fd), "socket"))
		}
	}
}

// take returns the first n descriptors received and not yet taken.
func (r *wireReader) take(n int) ([]*os.File, error) {
	if n <= 0 {
		return nil, nil
	}
	if n > len(r.fds) {
		got := len(r.fds)
		closeFiles(r.fds)
		r.fds = nil
		return nil, fmt.Errorf("a message announced %d descriptors, %d came", n, got)
	}
	out := r.fds[:n:n]
	r.fds = r.fds[n:]
	return out, nil
}

// close closes the descriptors nobody took.
func (r *wireReader) close() {
	closeFiles(r.fds)
	r.fds = nil
}

func (r *wireReader) setReadDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// writeWithFiles writes line (one protocol line, newline included) with
// files as SCM_RIGHTS in one sendmsg, so the descriptors go with its first
// byte. The files stay the caller's; their blocking mode is not changed.
func writeWithFiles(c *net.UnixConn, line []byte, files []*os.File) error {
	if len(files) == 0 {
		_, err := c.Write(line)
		return err
	}
	fds := make([]int, 0, len(files))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, f := range files {
		fd, err := dupFd(f)
		if err != nil {
			return fmt.Errorf("passing %s: %w", f.Name(), err)
		}
		fds = append(fds, fd)
	}
	n, _, err := c.WriteMsgUnix(line, unix.UnixRights(fds...), nil)
	if err == nil && n < len(line) {
		// A short sendmsg on a stream socket: the descriptors went with the
		// first byte; the rest follows as plain data.
		_, err = c.Write(line[n:])
	}
	return err
}
