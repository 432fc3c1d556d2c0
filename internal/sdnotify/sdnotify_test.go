package sdnotify_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/sdnotify"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "__helper" && os.Args[2] == "notify" {
		// A separate process reporting through go-systemd, as an app would.
		sent, err := daemon.SdNotify(false, os.Args[3])
		if err != nil || !sent {
			fmt.Fprintln(os.Stderr, "SdNotify:", sent, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func listen(t *testing.T, path string) *sdnotify.Server {
	t.Helper()
	s, err := sdnotify.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func next(t *testing.T, s *sdnotify.Server) sdnotify.Message {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		if !ok {
			t.Fatal("Messages closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	return sdnotify.Message{}
}

func notify(t *testing.T, state string) {
	t.Helper()
	sent, err := daemon.SdNotify(false, state)
	if err != nil || !sent {
		t.Fatalf("SdNotify(%q) = %v, %v", state, sent, err)
	}
}

func TestGoSystemdClient(t *testing.T) {
	s := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", s.Path())

	notify(t, daemon.SdNotifyReady+"\nSTATUS=serving 3 clients")
	m := next(t, s)
	if st, ok := m.Status(); !m.Ready() || !ok || st != "serving 3 clients" {
		t.Fatalf("got %+v", m.Vars)
	}
	if m.Stopping() || m.Watchdog() || m.Reloading() {
		t.Fatalf("got %+v", m.Vars)
	}
	notify(t, daemon.SdNotifyWatchdog)
	if m := next(t, s); !m.Watchdog() || m.Ready() {
		t.Fatalf("got %+v", m.Vars)
	}
	// A burst larger than any buffer: a sender blocks until we read.
	sendErr := make(chan error, 1)
	go func() {
		for i := 0; i < 200; i++ {
			if _, err := daemon.SdNotify(false, "STATUS="+strconv.Itoa(i)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for i := 0; i < 200; i++ {
		if st, _ := next(t, s).Status(); st != strconv.Itoa(i) {
			t.Fatalf("message %d: status %q", i, st)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
}

func TestAnyProcessOfTheInstance(t *testing.T) {
	s := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "__helper", "notify", "STOPPING=1\nMAINPID=42")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.Path(), "GORACE=atexit_sleep_ms=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	m := next(t, s)
	if pid, ok := m.MainPID(); !m.Stopping() || !ok || pid != 42 {
		t.Fatalf("got %+v", m.Vars)
	}
}

func TestAbstractSocket(t *testing.T) {
	s := listen(t, "@keel-sdnotify-test-"+strconv.Itoa(os.Getpid()))
	t.Setenv("NOTIFY_SOCKET", s.Path())
	notify(t, "READY=1")
	if !next(t, s).Ready() {
		t.Fatal("not ready")
	}
}

func TestParse(t *testing.T) {
	m := sdnotify.Parse([]byte("READY=1\n\nnonsense\n=x\nSTATUS=a=b\nSTATUS=last\nMAINPID=x"))
	want := map[string]string{"READY": "1", "STATUS": "last", "MAINPID": "x"}
	if fmt.Sprint(m.Vars) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", m.Vars, want)
	}
	if _, ok := m.MainPID(); ok {
		t.Fatal("MAINPID=x accepted")
	}
	if m := sdnotify.Parse([]byte("READY=0")); m.Ready() {
		t.Fatal("READY=0 is ready")
	}
}

func TestCloseWithUnreadMessagesAndStaleFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify.sock")
	// A socket file left by a dead keeper is replaced.
	stale, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	stale.Close()
	s, err := sdnotify.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	// More than the channel holds, fewer than would fill the kernel's
	// queue too (net.unix.max_dgram_qlen, 10 by default) and block us.
	for i := 0; i < 40; i++ {
		notify(t, "STATUS=unread")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for range s.Messages() {
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}

	// Anything that is not a socket is not ours to remove.
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sdnotify.Listen(path); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

func TestShutdownReturnsWhatWasSentBefore(t *testing.T) {
	s, err := sdnotify.Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", s.Path())
	// Some in the channel, one held by the receiver, some on the socket.
	const n = 40
	for i := 0; i < n; i++ {
		notify(t, "STATUS="+strconv.Itoa(i))
	}
	if st, _ := next(t, s).Status(); st != "0" {
		t.Fatalf("first message %q", st)
	}
	rest, err := s.Shutdown()
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != n-1 {
		t.Fatalf("Shutdown returned %d messages, want %d", len(rest), n-1)
	}
	for i, m := range rest {
		if st, _ := m.Status(); st != strconv.Itoa(i+1) {
			t.Fatalf("message %d: %q", i+1, st)
		}
	}
	if more, err := s.Shutdown(); err != nil || more != nil {
		t.Fatalf("second Shutdown: %v, %v", more, err)
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
}
