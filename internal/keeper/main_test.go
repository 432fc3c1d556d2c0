package keeper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/procs"
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
	case "getenv":
		// Each named variable's value, or that it is unset.
		for _, k := range args {
			if v, ok := os.LookupEnv(k); ok {
				fmt.Printf("%s=%s\n", k, v)
			} else {
				fmt.Printf("%s unset\n", k)
			}
		}
		return 0
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
		// Speaks on the (fake) Node channel the way process.send does:
		// each argument is a line.
		fd, _ := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
		f := os.NewFile(uintptr(fd), "channel")
		for _, a := range args {
			fmt.Fprintf(f, "%q\n", a)
		}
		block()
	case "ask-listen":
		return askListen(args)
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

// askListen is a cluster-mode server in miniature: (once a byte arrives
// through the FIFO args[1], if given) it asks the fake Node channel for
// port args[0], serves HTTP ("pid <pid>") on the socket it gets and says
// "ready"; an error answer ends it with code 98 for EADDRINUSE, 97
// otherwise.
func askListen(args []string) int {
	if len(args) > 1 {
		fifo, err := os.Open(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fifo.Read(make([]byte, 1))
	}
	fd, _ := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
	if _, err := unix.Write(fd, []byte(`"listen `+args[0]+`"`+"\n")); err != nil {
		fmt.Fprintln(os.Stderr, "asking:", err)
		return 1
	}
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "answer:", err)
		return 1
	}
	answer := strings.TrimSpace(string(buf[:n]))
	if code, ok := strings.CutPrefix(answer, "error "); ok {
		fmt.Println("listen failed:", code)
		if strings.HasPrefix(code, "EADDRINUSE ") {
			return 98
		}
		return 97
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	if answer != "socket" || len(msgs) != 1 {
		fmt.Fprintf(os.Stderr, "answer %q with %d control messages\n", answer, len(msgs))
		return 1
	}
	fds, _ := unix.ParseUnixRights(&msgs[0])
	l, err := net.FileListener(os.NewFile(uintptr(fds[0]), "socket"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid %d", os.Getpid())
	}))
	unix.Write(fd, []byte(`"ready"`+"\n"))
	block()
	return 0
}

// fakeNodeChannel stands in for internal/nodeipc: a socketpair whose lines
// "ready", "listening", "stopping", "crashing" and "crashing <text>" (JSON
// strings) become NodeEvents, and whose "listen <port>" is answered through
// NodeIPCRequest.ListenFor: "socket" with the descriptor, or
// "error <errno name> <message>".
type fakeNodeChannel struct {
	parent, child *os.File
	listenFor     func(context.Context, ListenRequest) (*os.File, error)
}

func fakeNodeIPC(req NodeIPCRequest) (NodeChannel, error) {
	// startGateVar holds instance 1's start here: until a test opens the
	// FIFO for writing and closes it again.
	if gate := req.App.Env[startGateVar]; gate != "" && req.Instance == 1 {
		f, err := os.Open(gate)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetNonblock(fds[0], true)
	return &fakeNodeChannel{
		parent:    os.NewFile(uintptr(fds[0]), "parent"),
		child:     os.NewFile(uintptr(fds[1]), "child"),
		listenFor: req.ListenFor,
	}, nil
}

// answer answers a listen request of the app.
func (c *fakeNodeChannel) answer(ctx context.Context, port int) {
	f, err := c.listenFor(ctx, ListenRequest{Port: port})
	line, rights := "socket\n", []byte(nil)
	if err != nil {
		code := "EKEEL"
		var errno syscall.Errno
		if errors.As(err, &errno) {
			code = unix.ErrnoName(errno)
		}
		line = "error " + code + " " + err.Error() + "\n"
	}
	write := func() {
		if err := unix.Sendmsg(int(c.parent.Fd()), []byte(line), rights, nil, 0); err != nil {
			fmt.Fprintln(os.Stderr, "fake node channel:", err)
		}
	}
	if f == nil {
		write()
		return
	}
	rc, _ := f.SyscallConn()
	rc.Control(func(fd uintptr) {
		rights = unix.UnixRights(int(fd))
		write()
	})
}

func (c *fakeNodeChannel) Child() *os.File { return c.child }

func (c *fakeNodeChannel) Prepare(fd int, argv []string) ([]string, []string) {
	return argv, []string{"NODE_CHANNEL_FD=" + strconv.Itoa(fd)}
}

func (c *fakeNodeChannel) Serve(ctx context.Context, report func(NodeEvent)) error {
	stop := context.AfterFunc(ctx, func() { c.parent.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	var answers sync.WaitGroup
	defer answers.Wait()
	defer cancel()
	sc := bufio.NewScanner(c.parent)
	for sc.Scan() {
		line, err := strconv.Unquote(sc.Text())
		if err != nil {
			line = strings.Trim(sc.Text(), `"`)
		}
		if port, ok := strings.CutPrefix(line, "listen "); ok && c.listenFor != nil {
			answers.Add(1)
			go func() {
				defer answers.Done()
				c.answer(ctx, atoi(port))
			}()
			continue
		}
		if text, ok := strings.CutPrefix(line, "crashing "); ok {
			report(NodeEvent{Kind: NodeCrashing, Text: text})
			continue
		}
		switch line {
		case "ready":
			report(NodeEvent{Kind: NodeReady})
		case "listening":
			report(NodeEvent{Kind: NodeListening})
		case "stopping":
			report(NodeEvent{Kind: NodeStopping})
		case "crashing":
			report(NodeEvent{Kind: NodeCrashing})
		}
	}
	return sc.Err()
}

func (c *fakeNodeChannel) Close() error { return c.parent.Close() }

// A keeper process runs on one P from its start (GOMAXPROCS=1 in the
// environment the daemon starts it with), and its apps see the
// GOMAXPROCS of the daemon's environment, or none, as before.
func TestKeeperRunsOnOneProc(t *testing.T) {
	for _, daemon := range []string{"3", ""} {
		t.Run("GOMAXPROCS="+daemon, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", daemon)
			want := "GOMAXPROCS=" + daemon
			if daemon == "" {
				os.Unsetenv("GOMAXPROCS") // t.Setenv puts it back
				want = "GOMAXPROCS unset"
			}
			h := newHarness(t)
			a := app("getenv", "GOMAXPROCS", procs.AppVar)
			p := h.spawn(h.spawner(nil), a, 0)
			// Read while the keeper runs (release ends it).
			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.st.KeeperPid))
			if ex := release(t, p); !ex.Clean() {
				t.Fatalf("exit %v", ex)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := logLines(t, h.home, a.Name, 0, "out"); !slices.Equal(got, []string{want, procs.AppVar + " unset"}) {
				t.Fatalf("the app saw %q, want [%s, %s unset]", got, want, procs.AppVar)
			}
			if daemon == "" && runtime.NumCPU() == 1 {
				return // one P anyway: no second start
			}
			var got []string
			for _, kv := range strings.Split(string(environ), "\x00") {
				if strings.HasPrefix(kv, "GOMAXPROCS=") {
					got = append(got, kv)
				}
			}
			if !slices.Equal(got, []string{"GOMAXPROCS=1"}) {
				t.Fatalf("the keeper's environment has %q, want [GOMAXPROCS=1]", got)
			}
		})
	}
}

// A keeper started without the daemon's GOMAXPROCS=1 (by hand, or by a
// daemon of another version) starts itself again with it: here a keeper
// waiting for its config on stdin, which ends at EOF having run nothing.
func TestKeeperExecsItselfOnOneProc(t *testing.T) {
	if runtime.NumCPU() == 1 {
		t.Skip("one CPU: the keeper runs on one P without starting again")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, KeeperArg)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, procs.AppVar+"=")
	})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // EOF before a config: the keeper exits 0
		if err := cmd.Wait(); err != nil {
			t.Errorf("keeper: %v", err)
		}
	}()
	environ := fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid)
	poll.Until(t, eventTimeout, "the keeper to start again with GOMAXPROCS=1 and "+procs.AppVar+"=", func() bool {
		b, err := os.ReadFile(environ)
		if err != nil {
			t.Fatal(err)
		}
		env := strings.Split(string(b), "\x00")
		return slices.Contains(env, "GOMAXPROCS=1") && slices.Contains(env, procs.AppVar+"=")
	})
}
