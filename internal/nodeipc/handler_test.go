package nodeipc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type served struct {
	events chan Event
	done   chan error
	cancel context.CancelFunc
}

func serve(t *testing.T, c *Conn, listen ListenFunc) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{events: make(chan Event, 16), done: make(chan error, 1), cancel: cancel}
	h := &Handler{Listen: listen, Events: s.events}
	go func() { s.done <- h.Serve(ctx, c) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

func (s *served) event(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case err := <-s.done:
		t.Fatalf("Serve returned %v while an event was expected", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return Event{}
}

func TestHandlerAnswersWithHandle(t *testing.T) {
	parent, child := newPair(t)
	l := listenTCP(t)
	reqs := make(chan ListenRequest, 1)
	serve(t, parent, func(ctx context.Context, req ListenRequest) (*os.File, error) {
		reqs <- req
		return l.File(), nil
	})
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":3,"port":3000,"host":"::1","backlog":12,"exclusive":true,"ipv6Only":true}` + "\n")
	if got := <-reqs; got != (ListenRequest{ID: 3, Port: 3000, Host: "::1", Backlog: 12, Exclusive: true, IPv6Only: true}) {
		t.Fatalf("request %+v", got)
	}
	line, fds := child.readMsg()
	m := decode(t, line)
	inner, _ := m["msg"].(map[string]any)
	if m["cmd"] != "NODE_HANDLE" || m["type"] != "net.Native" || inner["cmd"] != CmdListenReply || inner["id"] != 3.0 || inner["backlog"] == nil {
		t.Fatalf("reply %s", line)
	}
	if len(fds) != 1 {
		t.Fatalf("%d descriptors", len(fds))
	}
	syscall.Close(fds[0])
	// Node needs a non-blocking socket: libuv accepts until EAGAIN.
	rc, _ := l.File().SyscallConn()
	rc.Control(func(fd uintptr) {
		if fl, _ := unix.FcntlInt(fd, unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Error("the socket handed to the app is blocking")
		}
	})
}

func TestHandlerSendsHandlesOneAtATime(t *testing.T) {
	parent, child := newPair(t)
	l := listenTCP(t)
	serve(t, parent, func(ctx context.Context, req ListenRequest) (*os.File, error) {
		return l.File(), nil
	})
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":1,"port":1}` + "\n")
	line, fds := child.readMsg()
	if decode(t, line)["msg"].(map[string]any)["id"] != 1.0 || len(fds) != 1 {
		t.Fatalf("first reply %s with %d fds", line, len(fds))
	}
	syscall.Close(fds[0])
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":2,"port":2}` + "\n")
	// The second handle waits for the first one's ACK. A NACK of the first
	// brings it again.
	child.write(`{"cmd":"NODE_HANDLE_NACK"}` + "\n")
	line, fds = child.readMsg()
	if decode(t, line)["msg"].(map[string]any)["id"] != 1.0 || len(fds) != 1 {
		t.Fatalf("retransmission %s with %d fds", line, len(fds))
	}
	syscall.Close(fds[0])
	child.write(`{"cmd":"NODE_HANDLE_ACK"}` + "\n")
	line, fds = child.readMsg()
	if decode(t, line)["msg"].(map[string]any)["id"] != 2.0 || len(fds) != 1 {
		t.Fatalf("second reply %s with %d fds", line, len(fds))
	}
	syscall.Close(fds[0])
}

func TestHandlerGivesUpAfterRetransmissions(t *testing.T) {
	parent, child := newPair(t)
	l := listenTCP(t)
	serve(t, parent, func(ctx context.Context, req ListenRequest) (*os.File, error) {
		return l.File(), nil
	})
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":9,"port":1}` + "\n")
	for i := 0; i <= maxRetransmissions; i++ {
		_, fds := child.readMsg()
		for _, fd := range fds {
			syscall.Close(fd)
		}
		child.write(`{"cmd":"NODE_HANDLE_NACK"}` + "\n")
	}
	line, fds := child.readMsg()
	m := decode(t, line)
	if m["cmd"] != CmdListenReply || m["id"] != 9.0 || m["code"] != "EKEEL" || len(fds) != 0 {
		t.Fatalf("final answer %s", line)
	}
}

func TestHandlerSelfAndErrorReplies(t *testing.T) {
	parent, child := newPair(t)
	serve(t, parent, func(ctx context.Context, req ListenRequest) (*os.File, error) {
		if req.Port == 1 {
			return nil, nil
		}
		if req.Port == 2 {
			return nil, fmt.Errorf("binding: %w", syscall.EADDRINUSE)
		}
		return nil, errors.New("no such luck")
	})
	for port, want := range map[int]string{
		1: `{"cmd":"NODE_KEEL_LISTEN_REPLY","id":1,"self":true}`,
		2: `{"cmd":"NODE_KEEL_LISTEN_REPLY","id":2,"error":"binding: address already in use","code":"EADDRINUSE"}`,
		3: `{"cmd":"NODE_KEEL_LISTEN_REPLY","id":3,"error":"no such luck","code":"EKEEL"}`,
	} {
		child.write(fmt.Sprintf(`{"cmd":"NODE_KEEL_LISTEN","id":%d,"port":%d}`+"\n", port, port))
		if line, _ := child.readMsg(); line != want {
			t.Fatalf("port %d: reply %s, want %s", port, line, want)
		}
	}
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":4,"port":70000}` + "\n")
	if line, _ := child.readMsg(); decode(t, line)["code"] != "EKEEL" {
		t.Fatalf("bad port: reply %s", line)
	}
}

func TestHandlerWithoutListenFuncSaysSelf(t *testing.T) {
	parent, child := newPair(t)
	serve(t, parent, nil)
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":1,"port":80}` + "\n")
	if line, _ := child.readMsg(); line != `{"cmd":"NODE_KEEL_LISTEN_REPLY","id":1,"self":true}` {
		t.Fatalf("reply %s", line)
	}
}

func TestHandlerEvents(t *testing.T) {
	parent, child := newPair(t)
	s := serve(t, parent, nil)
	child.write(`"ready"` + "\n")
	child.write(`{"cmd":"NODE_KEEL_LISTENING","id":1,"keel":true,"address":"::","family":"IPv6","port":3000}` + "\n")
	child.write(`{"hello":"keel"}` + "\n")
	child.write(`{"cmd":"NODE_CLUSTER","ignored":true}` + "\n")
	child.write(`{"cmd":"NODE_KEEL_STOPPING","signal":"SIGTERM"}` + "\n")
	if ev := s.event(t); ev.Kind != EventReady || string(ev.Message) != `"ready"` {
		t.Fatalf("event %v %s", ev.Kind, ev.Message)
	}
	if ev := s.event(t); ev.Kind != EventListening || ev.Listening != (Listening{ID: 1, Keel: true, Address: "::", Family: "IPv6", Port: 3000}) {
		t.Fatalf("event %v %+v", ev.Kind, ev.Listening)
	}
	if ev := s.event(t); ev.Kind != EventMessage || string(ev.Message) != `{"hello":"keel"}` {
		t.Fatalf("event %v %s", ev.Kind, ev.Message)
	}
	if ev := s.event(t); ev.Kind != EventStopping {
		t.Fatalf("event %v", ev.Kind)
	}
	child.uc.Close()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Serve = %v at the end of the channel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return at the end of the channel")
	}
}

func TestHandlerAcknowledgesHandlesFromTheApp(t *testing.T) {
	parent, child := newPair(t)
	s := serve(t, parent, nil)
	l := listenTCP(t)
	rc, _ := l.File().SyscallConn()
	rc.Control(func(fd uintptr) {
		child.uc.WriteMsgUnix([]byte(`{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"mine":1}}`+"\n"), unix.UnixRights(int(fd)), nil)
	})
	if line, _ := child.readMsg(); line != `{"cmd":"NODE_HANDLE_ACK"}` {
		t.Fatalf("answer %s", line)
	}
	if ev := s.event(t); ev.Kind != EventMessage || string(ev.Message) != `{"mine":1}` {
		t.Fatalf("event %v %s", ev.Kind, ev.Message)
	}
	child.write(`{"cmd":"NODE_HANDLE","type":"net.Native","msg":{}}` + "\n")
	if line, _ := child.readMsg(); line != `{"cmd":"NODE_HANDLE_NACK"}` {
		t.Fatalf("answer to a handle without descriptor: %s", line)
	}
}

func TestHandlerStopsOnCancel(t *testing.T) {
	parent, child := newPair(t)
	started := make(chan struct{})
	s := serve(t, parent, func(ctx context.Context, req ListenRequest) (*os.File, error) {
		close(started)
		<-ctx.Done() // a slow answer
		return nil, ctx.Err()
	})
	child.write(`{"cmd":"NODE_KEEL_LISTEN","id":1,"port":80}` + "\n")
	<-started
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	// The channel is still usable.
	child.write(`"later"` + "\n")
	if m, err := parent.Recv(); err != nil || m.String() != `"later"` {
		t.Fatalf("Recv after Serve = %s, %v", m.Raw, err)
	}
}
