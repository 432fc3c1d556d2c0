package serve

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

func readDatagram(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// Notify sends exactly the datagram go-systemd's SdNotify sends, to a path
// and to an abstract socket, and leaves NOTIFY_SOCKET set.
func TestNotifyMatchesGoSystemd(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name, conn := notifySocket(t, abstract)
		t.Setenv("NOTIFY_SOCKET", name)
		const state = "READY=1\nSTATUS=serving on 127.0.0.1:8080"
		if err := Notify(state); err != nil {
			t.Fatalf("Notify to %s: %v", name, err)
		}
		ours := readDatagram(t, conn)
		if sent, err := daemon.SdNotify(false, state); !sent || err != nil {
			t.Fatalf("SdNotify: %v %v", sent, err)
		}
		theirs := readDatagram(t, conn)
		if ours != state || ours != theirs {
			t.Errorf("%s: Notify sent %q, SdNotify %q, want %q", name, ours, theirs, state)
		}
		if os.Getenv("NOTIFY_SOCKET") != name {
			t.Error("Notify unset NOTIFY_SOCKET")
		}
	}
}

func TestNotifyUnsetIsANoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET = %v, want nil", err)
	}
}

func TestNotifyErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative/notify.sock")
	if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "neither an absolute path") {
		t.Errorf("relative NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/missing.sock")
	if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "serve: notifying") {
		t.Errorf("missing socket: %v", err)
	}
}
