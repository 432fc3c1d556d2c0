package sdnotify_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/keel-run/keel/internal/sdnotify"
)

func ExampleListen() {
	dir, _ := os.MkdirTemp("", "sdnotify")
	defer os.RemoveAll(dir)
	srv, err := sdnotify.Listen(filepath.Join(dir, "notify.sock"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	// The service's side: NOTIFY_SOCKET names the server's socket.
	os.Setenv("NOTIFY_SOCKET", srv.Path())
	defer os.Unsetenv("NOTIFY_SOCKET")
	daemon.SdNotify(false, "READY=1\nSTATUS=listening on :8080")

	m := <-srv.Messages()
	status, _ := m.Status()
	fmt.Println(m.Ready(), status)
	// Output: true listening on :8080
}
