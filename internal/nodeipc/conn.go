package nodeipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables of the child's end of the channel.
const (
	// EnvChannelFD is where Node looks for the channel's descriptor.
	EnvChannelFD = "NODE_CHANNEL_FD"
	// EnvSerialization selects Node's message encoding; keel speaks "json".
	EnvSerialization = "NODE_CHANNEL_SERIALIZATION_MODE"
	// EnvMarker tells keel's preload that the channel is keel's. The preload
	// deletes it (and EnvStopSignal) from process.env, so processes the app
	// starts never mistake their own channel to the app for keel's.
	EnvMarker = "KEEL_NODE_IPC"
	// EnvStopSignal names the app's stop signal ("SIGTERM" when unset), on
	// which the preload closes the app's servers gracefully.
	EnvStopSignal = "KEEL_STOP_SIGNAL"
	// EnvGracefulCrash turns on graceful crash in the preload and says how
	// long its drain may last, in milliseconds (see GracefulCrashEnv).
	EnvGracefulCrash = "KEEL_GRACEFUL_CRASH_MS"
)

// MaxMessage is the longest message line Recv accepts (16 MiB); a longer
// one fails the channel with ErrMessageTooLarge.
const MaxMessage = 16 << 20

// ErrMessageTooLarge is returned by Recv for a line longer than MaxMessage.
var ErrMessageTooLarge = errors.New("nodeipc: message longer than 16 MiB")

// maxFDs bounds the descriptors one read may carry. Node sends at most one
// per message; anything beyond is closed by the kernel (MSG_CTRUNC).
const maxFDs = 8

// Conn is the parent's end of a Node IPC channel: newline-delimited JSON
// both ways, with listening sockets passed as SCM_RIGHTS.
//
// Send and SendHandle may be called from several goroutines at once; each
// message is written whole. Recv must be called from one goroutine at a
// time.
type Conn struct {
	uc *net.UnixConn

	wmu sync.Mutex // held while writing one message

	// Owned by the goroutine calling Recv.
	buf    []byte     // bytes read, not yet returned as messages
	fds    []*os.File // descriptors received, not yet given to a NODE_HANDLE message
	queue  []Message  // parsed messages not yet returned
	rerr   error      // sticky read error
	readBf []byte
	oob    []byte
}

// Message is one message from the child.
type Message struct {
	// Raw is the message's JSON, as the child sent it (no newline).
	Raw json.RawMessage
	// Cmd is the message's "cmd" member, when it is an object with a
	// string "cmd" (Node's internal messages: "NODE_HANDLE_ACK", …, and
	// keel's "NODE_KEEL_…").
	Cmd string
	// File is the descriptor that came with a "NODE_HANDLE" message, or
	// nil (a "NODE_HANDLE" without one must be answered NODE_HANDLE_NACK).
	// The receiver owns it and must close it.
	File *os.File
}

// String is Raw as a string.
func (m Message) String() string { return string(m.Raw) }

// NewChannel makes a channel: a SOCK_STREAM socketpair. parent is keel's
// end; child is the end to pass to the Node process, e.g. as
// exec.Cmd.ExtraFiles[i], with ChildEnv(3+i, …) in its environment. Close
// child after the process has started (or failed to), or Recv will never
// see the end of the channel when the child exits.
func NewChannel() (parent *Conn, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("node ipc channel: %w", os.NewSyscallError("socketpair", err))
	}
	pf := os.NewFile(uintptr(fds[0]), "node-ipc-parent")
	parent, err = NewConn(pf)
	pf.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return parent, os.NewFile(uintptr(fds[1]), "node-ipc-child"), nil
}

// NewConn makes a Conn from an existing unix stream socket (for instance a
// channel a keeper inherited). It dups f; the caller still owns f.
func NewConn(f *os.File) (*Conn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("node ipc channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("node ipc channel: %s is not a unix socket", f.Name())
	}
	return &Conn{
		uc:     uc,
		readBf: make([]byte, 64<<10),
		oob:    make([]byte, unix.CmsgSpace(maxFDs*4)),
	}, nil
}

// ChildEnv is the environment a Node child needs to find the channel at
// descriptor fd and know it is keel's: NODE_CHANNEL_FD,
// NODE_CHANNEL_SERIALIZATION_MODE=json, KEEL_NODE_IPC=1 and, if stopSignal
// is not empty, KEEL_STOP_SIGNAL (a name such as "SIGINT").
func ChildEnv(fd int, stopSignal string) []string {
	env := []string{
		EnvChannelFD + "=" + strconv.Itoa(fd),
		EnvSerialization + "=json",
		EnvMarker + "=1",
	}
	if stopSignal != "" {
		env = append(env, EnvStopSignal+"="+stopSignal)
	}
	return env
}

// GracefulCrashEnv is the environment variable that turns on the
// preload's graceful crash: on a fatal error the app drains for at most
// drain (at least a millisecond) before it exits 1. Without it the preload
// leaves fatal errors to Node.
func GracefulCrashEnv(drain time.Duration) string {
	return EnvGracefulCrash + "=" + strconv.FormatInt(max(drain.Milliseconds(), 1), 10)
}

// Close closes the parent's end. The child sees the channel disconnect.
func (c *Conn) Close() error { return c.uc.Close() }

// SetReadDeadline makes a blocked or later Recv return an error that
// satisfies os.IsTimeout once t has passed. A zero t clears it. Messages
// already read stay queued.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// Send writes v as one JSON message. A string v arrives in the child's
// process.on('message') as that string.
func (c *Conn) Send(v any) error {
	line, err := marshalLine(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.uc.Write(line); err != nil {
		return fmt.Errorf("node ipc send: %w", err)
	}
	return nil
}

// SendHandle sends f, a listening TCP socket, the way Node's
// subprocess.send(msg, handle) does: one sendmsg whose data is the line
// {"cmd":"NODE_HANDLE","type":"net.Native","msg":msg} and whose control
// data is SCM_RIGHTS with f's descriptor. The child gets msg and the raw
// handle, and answers NODE_HANDLE_ACK (or NODE_HANDLE_NACK if the
// descriptor did not arrive, after which the message may be sent again).
// Node expects one unacknowledged handle at a time. The child gets its own
// copy of the descriptor; f stays the caller's, and its blocking mode is
// not changed.
func (c *Conn) SendHandle(msg any, f *os.File) error {
	line, err := marshalLine(struct {
		Cmd  string `json:"cmd"`
		Type string `json:"type"`
		Msg  any    `json:"msg"`
	}{"NODE_HANDLE", "net.Native", msg})
	if err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("node ipc send handle: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var n int
	var werr error
	cerr := rc.Control(func(fd uintptr) {
		n, _, werr = c.uc.WriteMsgUnix(line, unix.UnixRights(int(fd)), nil)
	})
	if cerr != nil {
		return fmt.Errorf("node ipc send handle: %w", cerr)
	}
	if werr != nil {
		return fmt.Errorf("node ipc send handle: %w", werr)
	}
	if n < len(line) {
		// A short sendmsg on a stream socket: the descriptor went with the
		// first byte; the rest follows as plain data.
		if _, err := c.uc.Write(line[n:]); err != nil {
			return fmt.Errorf("node ipc send handle: %w", err)
		}
	}
	return nil
}

func marshalLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("node ipc message: %w", err)
	}
	return append(b, '\n'), nil
}

// Recv returns the child's next message. It returns io.EOF once the child
// has closed its end (normally: it exited) and every message before was
// returned; a timeout error after SetReadDeadline; ErrMessageTooLarge for a
// runaway line; and any other read error. Blank lines are skipped; a line
// that is not JSON is an error, as in Node, which would fail the channel.
// A descriptor goes with the next NODE_HANDLE message, as in Node; those
// that no NODE_HANDLE message claims are closed when the channel ends.
func (c *Conn) Recv() (Message, error) {
	for len(c.queue) == 0 {
		if c.rerr != nil {
			return Message{}, c.rerr
		}
		if err := c.readChunk(); err != nil {
			c.rerr = err
			if !isTimeout(err) {
				c.closeFDs()
			} else {
				// A deadline is not the end of the channel: try again later.
				c.rerr = nil
				return Message{}, err
			}
		}
	}
	m := c.queue[0]
	c.queue[0] = Message{}
	c.queue = c.queue[1:]
	return m, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *Conn) closeFDs() {
	for _, f := range c.fds {
		f.Close()
	}
	c.fds = nil
}

// readChunk does one read and parses the complete lines in it.
func (c *Conn) readChunk() error {
	// If the kernel had to drop descriptors (MSG_CTRUNC), the NODE_HANDLE
	// message they belonged to goes without one and gets a NACK.
	n, oobn, _, _, err := c.uc.ReadMsgUnix(c.readBf, c.oob)
	if oobn > 0 {
		c.takeRights(c.oob[:oobn])
	}
	if n > 0 {
		c.buf = append(c.buf, c.readBf[:n]...)
		if perr := c.parseLines(); perr != nil {
			return perr
		}
	}
	if err == nil && n == 0 && oobn == 0 {
		err = io.EOF
	}
	if errors.Is(err, io.EOF) {
		if len(c.buf) > 0 {
			return fmt.Errorf("node ipc: channel closed in the middle of a message")
		}
		return io.EOF
	}
	return err
}

func (c *Conn) takeRights(oob []byte) {
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
			if len(c.fds) >= maxFDs {
				// Nothing claims them: Node sends one per NODE_HANDLE.
				unix.Close(fd)
				continue
			}
			c.fds = append(c.fds, os.NewFile(uintptr(fd), "node-ipc-handle"))
		}
	}
}

func (c *Conn) parseLines() error {
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			if len(c.buf) > MaxMessage {
				return ErrMessageTooLarge
			}
			if len(c.buf) == 0 {
				c.buf = nil
			}
			return nil
		}
		line := bytes.TrimSpace(c.buf[:i])
		c.buf = c.buf[i+1:]
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			return fmt.Errorf("node ipc: the child sent a line that is not JSON: %.80q", line)
		}
		m := Message{Raw: json.RawMessage(bytes.Clone(line))}
		var head struct {
			Cmd any `json:"cmd"`
		}
		if line[0] == '{' && json.Unmarshal(line, &head) == nil {
			if s, ok := head.Cmd.(string); ok {
				m.Cmd = s
			}
		}
		if m.Cmd == "NODE_HANDLE" && len(c.fds) > 0 {
			m.File = c.fds[0]
			c.fds = c.fds[1:]
		}
		c.queue = append(c.queue, m)
	}
}
