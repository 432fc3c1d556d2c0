package nodeipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/sockets"
	"golang.org/x/sys/unix"
)

// fakeChild wraps the child's end of a channel for tests that speak the
// protocol from Go instead of Node.
type fakeChild struct {
	t  *testing.T
	uc *net.UnixConn
	rd []byte // bytes read and not yet consumed
}

func newPair(t *testing.T) (*Conn, *fakeChild) {
	t.Helper()
	parent, child, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(child)
	child.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Close(); c.Close() })
	return parent, &fakeChild{t: t, uc: c.(*net.UnixConn)}
}

func (f *fakeChild) write(s string) {
	f.t.Helper()
	if _, err := f.uc.Write([]byte(s)); err != nil {
		f.t.Fatal(err)
	}
}

// readMsg reads one line, and the descriptors that came with its bytes.
func (f *fakeChild) readMsg() (string, []int) {
	f.t.Helper()
	f.uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var fds []int
	for {
		if i := bytes.IndexByte(f.rd, '\n'); i >= 0 {
			line := string(f.rd[:i])
			f.rd = f.rd[i+1:]
			return line, fds
		}
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(4*4))
		n, oobn, _, _, err := f.uc.ReadMsgUnix(buf, oob)
		if err != nil {
			f.t.Fatalf("fake child read: %v", err)
		}
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				f.t.Fatal(err)
			}
			for _, m := range msgs {
				got, err := unix.ParseUnixRights(&m)
				if err != nil {
					f.t.Fatal(err)
				}
				fds = append(fds, got...)
			}
		}
		f.rd = append(f.rd, buf[:n]...)
	}
}

func listenTCP(t *testing.T) *sockets.Listener {
	t.Helper()
	a, err := sockets.Parse("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := sockets.Listen(a, sockets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestSendHandleFraming(t *testing.T) {
	parent, child := newPair(t)
	l := listenTCP(t)
	if err := parent.SendHandle(map[string]any{"cmd": "NODE_KEEL_LISTEN_REPLY", "id": 7}, l.File()); err != nil {
		t.Fatal(err)
	}
	line, fds := child.readMsg()
	if want := `{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_KEEL_LISTEN_REPLY","id":7}}`; line != want {
		t.Fatalf("line %s, want %s", line, want)
	}
	if len(fds) != 1 {
		t.Fatalf("got %d descriptors, want 1", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "received")
	defer f.Close()
	got, err := sockets.FileAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != l.LocalAddr().String() {
		t.Fatalf("received socket bound to %v, want %v", got, l.LocalAddr())
	}
	// The sender's file is untouched: still blocking, still open.
	rc, _ := l.File().SyscallConn()
	rc.Control(func(fd uintptr) {
		fl, _ := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if fl&unix.O_NONBLOCK != 0 {
			t.Error("SendHandle made the socket non-blocking")
		}
	})
}

func TestSendAndRecv(t *testing.T) {
	parent, child := newPair(t)
	if err := parent.Send("hello"); err != nil {
		t.Fatal(err)
	}
	if line, _ := child.readMsg(); line != `"hello"` {
		t.Fatalf("child got %s", line)
	}
	// Lines split and joined arbitrarily across writes.
	child.write("\"ready\"\n{\"cmd\":\"NODE_KEEL_STOPPING\",\"signal\":\"SIGTERM\"}\n  \n{\"a\":")
	child.write("[1,2]}\n{\"cmd\":42}\n")
	want := []struct{ raw, cmd string }{
		{`"ready"`, ""},
		{`{"cmd":"NODE_KEEL_STOPPING","signal":"SIGTERM"}`, "NODE_KEEL_STOPPING"},
		{`{"a":[1,2]}`, ""},
		{`{"cmd":42}`, ""},
	}
	for _, w := range want {
		m, err := parent.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.String() != w.raw || m.Cmd != w.cmd || m.File != nil {
			t.Fatalf("Recv = %q cmd %q file %v, want %q cmd %q", m.Raw, m.Cmd, m.File, w.raw, w.cmd)
		}
	}
	child.uc.Close()
	if _, err := parent.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after the child closed: %v, want EOF", err)
	}
	if _, err := parent.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv again: %v, want EOF", err)
	}
}

func TestRecvHandleFromChild(t *testing.T) {
	parent, child := newPair(t)
	l := listenTCP(t)
	rc, _ := l.File().SyscallConn()
	var werr error
	rc.Control(func(fd uintptr) {
		_, _, werr = child.uc.WriteMsgUnix([]byte(`{"cmd":"NODE_HANDLE","type":"net.Native","msg":"x"}`+"\n"), unix.UnixRights(int(fd)), nil)
	})
	if werr != nil {
		t.Fatal(werr)
	}
	m, err := parent.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Cmd != "NODE_HANDLE" || m.File == nil {
		t.Fatalf("Recv = %s, file %v", m.Raw, m.File)
	}
	a, err := sockets.FileAddr(m.File)
	m.File.Close()
	if err != nil || a.String() != l.LocalAddr().String() {
		t.Fatalf("received %v, %v", a, err)
	}
}

func TestRecvRejectsNonJSON(t *testing.T) {
	parent, child := newPair(t)
	child.write("not json\n")
	if _, err := parent.Recv(); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("Recv = %v", err)
	}
}

func TestRecvTruncatedMessage(t *testing.T) {
	parent, child := newPair(t)
	child.write(`{"half":`)
	child.uc.Close()
	if _, err := parent.Recv(); err == nil || !strings.Contains(err.Error(), "middle of a message") {
		t.Fatalf("Recv = %v", err)
	}
}

func TestRecvTooLarge(t *testing.T) {
	parent, child := newPair(t)
	go func() {
		// Stops with an error once the parent closes.
		chunk := []byte(`"` + strings.Repeat("x", 1<<20))
		child.uc.Write(chunk)
		chunk = bytes.Repeat([]byte("x"), 1<<20)
		for i := 0; i < 20; i++ {
			if _, err := child.uc.Write(chunk); err != nil {
				return
			}
		}
	}()
	_, err := parent.Recv()
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("Recv = %v, want ErrMessageTooLarge", err)
	}
	parent.Close()
}

func TestSetReadDeadlineInterruptsRecv(t *testing.T) {
	parent, child := newPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := parent.Recv()
		done <- err
	}()
	parent.SetReadDeadline(time.Now())
	err := <-done
	if !os.IsTimeout(err) {
		t.Fatalf("Recv = %v, want a timeout", err)
	}
	// The channel still works afterwards.
	parent.SetReadDeadline(time.Time{})
	child.write("\"after\"\n")
	m, err := parent.Recv()
	if err != nil || m.String() != `"after"` {
		t.Fatalf("Recv = %s, %v", m.Raw, err)
	}
}

func TestChildEnv(t *testing.T) {
	got := strings.Join(ChildEnv(5, ""), " ")
	if want := "NODE_CHANNEL_FD=5 NODE_CHANNEL_SERIALIZATION_MODE=json KEEL_NODE_IPC=1"; got != want {
		t.Fatalf("ChildEnv = %q, want %q", got, want)
	}
	got = strings.Join(ChildEnv(3, "SIGINT"), " ")
	if !strings.HasSuffix(got, " KEEL_STOP_SIGNAL=SIGINT") {
		t.Fatalf("ChildEnv = %q", got)
	}
}

func TestPreloadPath(t *testing.T) {
	dir := t.TempDir()
	p1, err := PreloadPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p1, ".cjs") || !strings.HasPrefix(p1, dir+"/keel-preload-") {
		t.Fatalf("path %q", p1)
	}
	b, err := os.ReadFile(p1)
	if err != nil || !bytes.Equal(b, Preload()) {
		t.Fatalf("file content differs from the embedded script: %v", err)
	}
	// Idempotent, and it repairs a damaged file.
	if err := os.WriteFile(p1, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	p2, err := PreloadPath(dir)
	if err != nil || p2 != p1 {
		t.Fatalf("second PreloadPath = %q, %v", p2, err)
	}
	if b, _ := os.ReadFile(p2); !bytes.Equal(b, Preload()) {
		t.Fatal("damaged file was not rewritten")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir holds %d files, want 1 (no temporaries left)", len(entries))
	}
	if _, err := PreloadPath(dir + "/missing"); err == nil {
		t.Fatal("PreloadPath into a missing directory succeeded")
	}
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return m
}
