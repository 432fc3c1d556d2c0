package nodeipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Commands of keel's protocol (see the package documentation).
const (
	CmdListen      = "NODE_KEEL_LISTEN"
	CmdListenReply = "NODE_KEEL_LISTEN_REPLY"
	CmdListening   = "NODE_KEEL_LISTENING"
	CmdStopping    = "NODE_KEEL_STOPPING"

	cmdHandle     = "NODE_HANDLE"
	cmdHandleAck  = "NODE_HANDLE_ACK"
	cmdHandleNack = "NODE_HANDLE_NACK"
)

// maxRetransmissions is how often a handle is sent again after a NACK, as
// in Node.
const maxRetransmissions = 3

// ListenRequest is what a Node app's listen() asked for, as Node's
// server.listen passes it.
type ListenRequest struct {
	ID   int    `json:"id"`
	Port int    `json:"port"` // 0: any free port
	Host string `json:"host"` // as the app wrote it; "": every interface
	// Backlog is the app's explicit backlog, 0 if it gave none. The app
	// listens on a handle with this backlog, or the reply's if 0.
	Backlog   int  `json:"backlog"`
	Exclusive bool `json:"exclusive"` // listen({exclusive: true}): not to be shared
	IPv6Only  bool `json:"ipv6Only"`
}

// ListenFunc yields the socket for a listen request: a listening TCP
// socket, which the app then accepts on, or nil and nil to let the app
// bind the port itself, or an error, which the app's server emits as an
// 'error' event (code: the errno's name if err wraps a syscall.Errno, as
// "EADDRINUSE", else "EKEEL"). The file stays the caller's: Serve sends a
// copy and never closes it, and it must stay open until Serve returns. ctx
// is cancelled when Serve returns.
type ListenFunc func(ctx context.Context, req ListenRequest) (*os.File, error)

// EventKind says what the app reported.
type EventKind int

const (
	// EventReady: the app called process.send('ready') (ready: message).
	EventReady EventKind = iota + 1
	// EventListening: a server of the app is listening (ready: listen).
	EventListening
	// EventStopping: the preload began closing the servers on the stop
	// signal, or on a fatal error (Crash).
	EventStopping
	// EventMessage: any other message the app sent with process.send.
	EventMessage
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventListening:
		return "listening"
	case EventStopping:
		return "stopping"
	case EventMessage:
		return "message"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one report from the app.
type Event struct {
	Kind EventKind
	// Message is the app's message as sent (EventReady, EventMessage).
	Message json.RawMessage
	// Listening describes the server (EventListening).
	Listening Listening
	// Crash: the app hit a fatal error and drains before it exits 1
	// (EventStopping of a graceful crash).
	Crash bool
	// Text is the fatal error as the preload printed it to stderr (a
	// crash), at most the last MaxCrashText bytes of it.
	Text string
}

// MaxCrashText bounds Event.Text: as much as keel reads of a log's end
// for a crash report.
const MaxCrashText = 64 << 10

// lastBytes is the end of s, at most n bytes, starting on a whole UTF-8
// character.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for i := 0; i < len(s) && i < utf8.UTFMax; i++ {
		if utf8.RuneStart(s[i]) {
			return s[i:]
		}
	}
	return s
}

// Listening is a server that started listening.
type Listening struct {
	// ID is the ListenRequest's; 0 for a listen keel was not asked about
	// (a path, fd or handle).
	ID int `json:"id"`
	// Keel is true when the server accepts on a socket from ListenFunc,
	// false when the app bound it itself.
	Keel    bool   `json:"keel"`
	Address string `json:"address,omitempty"`
	Family  string `json:"family,omitempty"` // "IPv4" or "IPv6"
	Port    int    `json:"port,omitempty"`
	Path    string `json:"path,omitempty"` // a unix socket's path
}

// Handler answers a Node app's listen requests and reports what it says.
// The zero value lets every app bind its own ports and discards events.
type Handler struct {
	// Listen yields sockets; nil answers every request with "bind it
	// yourself".
	Listen ListenFunc
	// Events receives the app's reports in order. Serve blocks while the
	// receiver is not ready (so keep it drained); nil discards them.
	Events chan<- Event
	// Log receives protocol anomalies (a malformed request, a handle the
	// app could not take); nil discards them.
	Log *slog.Logger
}

type listenResult struct {
	req  ListenRequest
	file *os.File
	err  error
}

// outgoing is a handle waiting to be sent or acknowledged.
type outgoing struct {
	req   ListenRequest
	file  *os.File
	tries int
}

// Serve runs the parent's side of the protocol on c until the channel ends.
// It reads every message, answers listen requests through h.Listen (each
// in its own goroutine, so a slow answer delays no other message), sends
// handles one at a time as Node expects (the next after the previous one's
// NODE_HANDLE_ACK; again after a NACK, up to 3 times), acknowledges and
// closes handles the app sends, and reports events.
//
// It returns nil when the child closed the channel (it exited or called
// process.disconnect()), ctx.Err() when ctx is done, or the channel's error.
// In every case all its goroutines have ended, including pending Listen
// calls (their ctx is cancelled), and c is still open: the caller closes
// it. Serve must be the only reader of c; others may Send on it meanwhile.
func (h *Handler) Serve(ctx context.Context, c *Conn) error {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	var calls sync.WaitGroup
	defer calls.Wait()
	defer cancel()

	msgs := make(chan Message)
	readDone := make(chan error, 1)
	stopRead := make(chan struct{})
	go func() {
		for {
			m, err := c.Recv()
			if err != nil {
				readDone <- err
				return
			}
			select {
			case msgs <- m:
			case <-stopRead:
				if m.File != nil {
					m.File.Close()
				}
				readDone <- nil
				return
			}
		}
	}()
	readerDone := false
	defer func() {
		if readerDone {
			return
		}
		close(stopRead)
		c.SetReadDeadline(time.Now())
		<-readDone
		c.SetReadDeadline(time.Time{})
	}()

	results := make(chan listenResult)
	var queue []*outgoing // queue[0] is sent and awaits its ACK
	sendHead := func() error {
		if len(queue) == 0 {
			return nil
		}
		o := queue[0]
		return c.SendHandle(listenReply{Cmd: CmdListenReply, ID: o.req.ID, Backlog: somaxconn()}, o.file)
	}
	emit := func(ev Event) error {
		if h.Events == nil {
			return nil
		}
		select {
		case h.Events <- ev:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()

		case err := <-readDone:
			readerDone = true
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err

		case r := <-results:
			if r.err != nil {
				if err := c.Send(errorReply(r.req.ID, r.err)); err != nil {
					return err
				}
				continue
			}
			if r.file == nil {
				if err := c.Send(listenReply{Cmd: CmdListenReply, ID: r.req.ID, Self: true}); err != nil {
					return err
				}
				continue
			}
			if err := setNonblock(r.file); err != nil {
				log.Warn("node ipc: making the socket non-blocking", "port", r.req.Port, "err", err)
			}
			queue = append(queue, &outgoing{req: r.req, file: r.file})
			if len(queue) == 1 {
				if err := sendHead(); err != nil {
					return err
				}
			}

		case m := <-msgs:
			switch m.Cmd {
			case CmdListen:
				var req ListenRequest
				if err := json.Unmarshal(m.Raw, &req); err != nil || req.Port < 0 || req.Port > 65535 {
					log.Warn("node ipc: malformed listen request", "message", m.String())
					if err := c.Send(listenReply{Cmd: CmdListenReply, ID: req.ID, Error: "keel could not read the listen request", Code: "EKEEL"}); err != nil {
						return err
					}
					continue
				}
				if h.Listen == nil {
					if err := c.Send(listenReply{Cmd: CmdListenReply, ID: req.ID, Self: true}); err != nil {
						return err
					}
					continue
				}
				calls.Add(1)
				go func() {
					defer calls.Done()
					f, err := h.Listen(ctx, req)
					select {
					case results <- listenResult{req: req, file: f, err: err}:
					case <-ctx.Done():
					}
				}()

			case CmdListening:
				var l Listening
				if err := json.Unmarshal(m.Raw, &l); err != nil {
					log.Warn("node ipc: malformed listening report", "message", m.String())
					continue
				}
				if err := emit(Event{Kind: EventListening, Listening: l}); err != nil {
					return err
				}

			case CmdStopping:
				var st struct {
					Crash bool   `json:"crash"`
					Text  string `json:"text"`
				}
				_ = json.Unmarshal(m.Raw, &st) // a malformed field is no crash
				ev := Event{Kind: EventStopping, Crash: st.Crash}
				if st.Crash {
					ev.Text = lastBytes(st.Text, MaxCrashText)
				}
				if err := emit(ev); err != nil {
					return err
				}

			case cmdHandleAck, cmdHandleNack:
				if len(queue) == 0 {
					log.Warn("node ipc: acknowledgement of no handle", "cmd", m.Cmd)
					continue
				}
				o := queue[0]
				if m.Cmd == cmdHandleNack && o.tries < maxRetransmissions {
					o.tries++
					if err := sendHead(); err != nil {
						return err
					}
					continue
				}
				queue = queue[1:]
				if m.Cmd == cmdHandleNack {
					log.Warn("node ipc: the app did not receive a socket", "port", o.req.Port)
					if err := c.Send(listenReply{Cmd: CmdListenReply, ID: o.req.ID, Error: "the socket did not reach the process", Code: "EKEEL"}); err != nil {
						return err
					}
				}
				if err := sendHead(); err != nil {
					return err
				}

			case cmdHandle:
				// The app sent us a handle (subprocess.send(msg, handle)):
				// Node holds back its later messages until we answer.
				if m.File == nil {
					if err := c.Send(map[string]string{"cmd": cmdHandleNack}); err != nil {
						return err
					}
					continue
				}
				m.File.Close()
				if err := c.Send(map[string]string{"cmd": cmdHandleAck}); err != nil {
					return err
				}
				var wrapped struct {
					Msg json.RawMessage `json:"msg"`
				}
				if json.Unmarshal(m.Raw, &wrapped) == nil && len(wrapped.Msg) > 0 {
					if err := emit(Event{Kind: EventMessage, Message: wrapped.Msg}); err != nil {
						return err
					}
				}

			default:
				if len(m.Cmd) > 5 && m.Cmd[:5] == "NODE_" {
					// Node's internal traffic that is not for us.
					continue
				}
				kind := EventMessage
				if string(m.Raw) == `"ready"` {
					kind = EventReady
				}
				if err := emit(Event{Kind: kind, Message: m.Raw}); err != nil {
					return err
				}
			}
		}
	}
}

// setNonblock puts f's socket in non-blocking mode. Node accepts in its
// event loop: woken by epoll, libuv calls accept(2) until EAGAIN. A socket
// Node receives as a handle keeps the mode it came with (libuv sets it
// only on sockets it creates), and on a blocking socket shared by several
// processes the accept that finds the queue empty — another instance took
// the connection — blocks the whole event loop until the next connection
// arrives, while the app's open connections wait. O_NONBLOCK belongs to
// the socket (the open file description), so this holds for every holder.
func setNonblock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), true) }); err != nil {
		return err
	}
	return serr
}

// listenReply is the answer to a listen request; with a handle it is the
// msg inside NODE_HANDLE.
type listenReply struct {
	Cmd     string `json:"cmd"`
	ID      int    `json:"id"`
	Backlog int    `json:"backlog,omitempty"` // with a handle: listen(2) backlog to use
	Self    bool   `json:"self,omitempty"`    // bind the port yourself
	Error   string `json:"error,omitempty"`
	Code    string `json:"code,omitempty"`
}

func errorReply(id int, err error) listenReply {
	code := "EKEEL"
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			code = name
		}
	}
	return listenReply{Cmd: CmdListenReply, ID: id, Error: err.Error(), Code: code}
}

// somaxconn is the backlog the app should pass to listen(2) on a socket
// it gets: the kernel's maximum, so that Node's default of 511 does not
// shrink the queue of a socket keel opened with a longer one.
func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 511
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 {
		return 511
	}
	return min(n, 65535)
}
