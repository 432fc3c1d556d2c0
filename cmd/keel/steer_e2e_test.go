package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/poll"
)

// runSteerApp runs the helper app of these tests; ok is false for any
// other name.
func runSteerApp(name string) (code int, ok bool) {
	if name != "gated" {
		return 0, false
	}
	return gatedApp(), true
}

// gatedApp accepts on keel's socket from the start, but says READY=1 only
// on SIGUSR1 and STOPPING=1 on SIGUSR2 (and keeps accepting); SIGTERM
// ends it. So every connection keel steers to it is answered, and the
// answers show where keel steered them.
func gatedApp() int {
	ln, err := net.FileListener(os.NewFile(3, "listen"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd 3:", err)
		return 5
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid %d\n", os.Getpid())
	})}
	notify := func(state string) {
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "notify:", err)
			return
		}
		c.Write([]byte(state))
		c.Close()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM)
	// The test signals it only once it said so.
	notify("STATUS=gated")
	go func() {
		for s := range sig {
			switch s {
			case syscall.SIGUSR1:
				notify("READY=1")
			case syscall.SIGUSR2:
				notify("STOPPING=1")
			default:
				srv.Close()
				return
			}
		}
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return 6
	}
	return 0
}

// Steering follows the supervisor's word alone: an instance that is not
// ready gets no new connections although it accepts, and one that says it
// is stopping stops getting them.
func TestOnlyServingInstancesGetConnections(t *testing.T) {
	e := newEnv(t)
	e.app("web", "gated", "-i", "3", "--listen", "127.0.0.1:0", "--ready", "notify")
	l := e.waitFor("3 starting and waiting for signals", func(l []api.Instance) bool {
		if !allStatus("web", 3, "starting")(l) {
			return false
		}
		for _, in := range l {
			if in.StatusText != "gated" {
				return false
			}
		}
		return true
	})
	pids := map[int]string{}
	for _, in := range l {
		pids[in.Instance] = "pid " + strconv.Itoa(in.Pid)
	}
	socks := e.describe("web").Sockets
	if len(socks) != 1 {
		t.Fatalf("sockets %q", socks)
	}
	_, port, _ := net.SplitHostPort(socks[0])
	url := "http://127.0.0.1:" + port + "/"
	signalInstance := func(l []api.Instance, n int, s syscall.Signal) {
		t.Helper()
		for _, in := range l {
			if in.Instance == n {
				if err := syscall.Kill(in.Pid, s); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
		t.Fatalf("no instance %d in %+v", n, l)
	}
	online := func(n ...int) func([]api.Instance) bool {
		return func(l []api.Instance) bool {
			c := 0
			for _, in := range l {
				for _, x := range n {
					if in.Instance == x && in.Status == "online" {
						c++
					}
				}
			}
			return c == len(n)
		}
	}

	signalInstance(l, 0, syscall.SIGUSR1)
	signalInstance(l, 2, syscall.SIGUSR1)
	l = e.waitFor("0 and 2 online", online(0, 2))
	got := spread(t, url, 60)
	if got[pids[1]] != 0 || got[pids[0]] < 10 || got[pids[2]] < 10 {
		t.Fatalf("with 0 and 2 ready and 1 not, 60 connections went to %v (pids %v)", got, pids)
	}

	signalInstance(l, 1, syscall.SIGUSR1)
	l = e.waitFor("all online", online(0, 1, 2))
	got = spread(t, url, 90)
	if len(got) != 3 {
		t.Fatalf("with all ready, 90 connections went to %v (pids %v)", got, pids)
	}

	// STOPPING=1 changes no status keel shows; wait until no connection
	// goes to 2 any more, then check it stays so.
	signalInstance(l, 2, syscall.SIGUSR2)
	if !poll.Within(5*time.Second, func() bool { return spread(t, url, 20)[pids[2]] == 0 }) {
		t.Fatalf("instance 2 said it is stopping and still gets connections")
	}
	got = spread(t, url, 60)
	if got[pids[2]] != 0 || got[pids[0]] < 10 || got[pids[1]] < 10 {
		t.Fatalf("with 2 stopping, 60 connections went to %v (pids %v)", got, pids)
	}
}
