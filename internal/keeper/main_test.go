package keeper

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/proc"
)

// helperArg makes the test binary run one of the helper apps below.
const helperArg = "__helper"

// TestMain makes the test binary three programs besides the tests: the
// keeper, the __exec step, and the helper apps.
func TestMain(m *testing.M) {
	// The race runtime lingers a second at exit unless told otherwise;
	// keepers inherit this.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case KeeperArg:
			if os.Getenv("KEEL_TEST_NO_NODE_IPC") == "1" {
				os.Exit(Main(os.Args[2:]))
			}
			os.Exit(MainWith(os.Args[2:], Options{NodeIPC: fakeNodeIPC}))
		case proc.ExecArg:
			os.Exit(proc.ExecMain(os.Args[2:]))
		case helperArg:
			os.Exit(helper(os.Args[2], os.Args[3:]))
		}
	}
	goleak.VerifyTestMain(m)
}

// helper runs the helper app name.
func helper(name string, args []string) int {
	switch name {
	case "serve":
		// Says who it is on both streams, then that it is ready (ready:
		// notify), then runs until signalled.
		fmt.Printf("hello out KEEL_APP=%s KEEL_INSTANCE=%s NODE_APP_INSTANCE=%s FOO=%s LISTEN_FDS=%s\n",
			os.Getenv("KEEL_APP"), os.Getenv("KEEL_INSTANCE"), os.Getenv("NODE_APP_INSTANCE"),
			os.Getenv("FOO"), os.Getenv("LISTEN_FDS"))
		fmt.Fprintln(os.Stderr, "hello err")
		sdNotify("READY=1\nSTATUS=NOTIFY_SOCKET=" + os.Getenv("NOTIFY_SOCKET"))
		block()
	case "sleep":
		block()
	case "activation":
		// What go-systemd's activation package makes of what keel passed;
		// it finds nothing unless LISTEN_PID is this process's pid.
		ls, err := activation.ListenersWithNames()
		if err != nil {
			fmt.Println("activation:", err)
			return 1
		}
		var names []string
		for name, l := range ls {
			names = append(names, fmt.Sprintf("%s=%s", name, l[0].Addr()))
		}
		sort.Strings(names)
		fmt.Println(strings.Join(names, " "))
		return 0
	case "spam":
		// Many status lines, then ready.
		for i := 1; i <= 1000; i++ {
			sdNotify("STATUS=" + strconv.Itoa(i))
		}
		sdNotify("READY=1")
		block()
	case "exit":
		n, _ := strconv.Atoi(args[0])
		fmt.Println("exiting with", n)
		return n
	case "lines":
		n, _ := strconv.Atoi(args[0])
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "line %d\n", i)
		}
		w.Flush()
		return 0
	case "notify":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		sdNotify("STATUS=warming up")
		sdNotify("READY=1\nSTATUS=serving")
		<-sig
		sdNotify("STOPPING=1")
		return 0
	case "stubborn":
		// Ignores SIGTERM, and so does its child; reports the child's pid.
		signal.Ignore(syscall.SIGTERM)
		exe, _ := os.Executable()
		c := exec.Command(exe, helperArg, "stubborn")
		if len(args) > 0 && args[0] == "leaf" {
			block()
		}
		c.Args = append(c.Args, "leaf")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sdNotify("READY=1\nSTATUS=grandchild " + strconv.Itoa(c.Process.Pid))
		block()
	case "listen-on-go":
		// fd 3 is a bound socket; it listens (and serves HTTP with "http")
		// only once a byte arrives through the FIFO args[1].
		fifo, err := os.Open(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fifo.Read(make([]byte, 1))
		if err := unix.Listen(3, 16); err != nil {
			fmt.Fprintln(os.Stderr, "listen:", err)
			return 1
		}
		if args[0] == "http" {
			l, err := net.FileListener(os.NewFile(3, "listener"))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/healthz" {
					http.NotFound(w, r)
				}
			}))
		}
		block()
	case "node-ready":
		// Speaks on the (fake) Node channel the way process.send does.
		fd, _ := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
		f := os.NewFile(uintptr(fd), "channel")
		fmt.Fprintf(f, "%q\n", args[0])
		block()
	}
	fmt.Fprintln(os.Stderr, "unknown helper", name)
	return 2
}

func block() { time.Sleep(time.Hour) }

func sdNotify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		fmt.Fprintln(os.Stderr, "sd_notify:", err)
	}
}

// fakeNodeChannel stands in for internal/nodeipc: a socketpair whose lines
// "ready", "listening" and "stopping" (JSON strings) become NodeEvents.
type fakeNodeChannel struct {
	parent, child *os.File
}

func fakeNodeIPC(NodeIPCRequest) (NodeChannel, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetNonblock(fds[0], true)
	return &fakeNodeChannel{parent: os.NewFile(uintptr(fds[0]), "parent"), child: os.NewFile(uintptr(fds[1]), "child")}, nil
}

func (c *fakeNodeChannel) Child() *os.File { return c.child }

func (c *fakeNodeChannel) Prepare(fd int, argv []string) ([]string, []string) {
	return argv, []string{"NODE_CHANNEL_FD=" + strconv.Itoa(fd)}
}

func (c *fakeNodeChannel) Serve(ctx context.Context, report func(NodeEvent)) error {
	stop := context.AfterFunc(ctx, func() { c.parent.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	sc := bufio.NewScanner(c.parent)
	for sc.Scan() {
		switch strings.Trim(sc.Text(), `"`) {
		case "ready":
			report(NodeReady)
		case "listening":
			report(NodeListening)
		case "stopping":
			report(NodeStopping)
		}
	}
	return sc.Err()
}

func (c *fakeNodeChannel) Close() error { return c.parent.Close() }
