package sockets

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// childEnv selects a helper command when the test binary runs as a child.
const childEnv = "KEEL_SOCKETS_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		goleak.VerifyTestMain(m)
	case "accept":
		os.Exit(childAccept())
	case "activation":
		os.Exit(childActivation())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// childAccept is the inheriting process: it takes fd 3 the way a
// socket-activated program does, checks it is an inheritable listening
// socket, accepts one connection and greets it.
func childAccept() int {
	fdFlags, err := unix.FcntlInt(3, unix.F_GETFD, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd 3:", err)
		return 3
	}
	if fdFlags&unix.FD_CLOEXEC != 0 {
		fmt.Fprintln(os.Stderr, "fd 3 is close-on-exec in the child")
		return 4
	}
	acc, err := unix.GetsockoptInt(3, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || acc != 1 {
		fmt.Fprintln(os.Stderr, "fd 3 is not listening:", acc, err)
		return 5
	}
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FileListener:", err)
		return 6
	}
	c, err := l.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, "accept:", err)
		return 7
	}
	fmt.Fprintf(c, "hello from %d names=%s\n", os.Getpid(), os.Getenv("LISTEN_FDNAMES"))
	c.Close()
	return 0
}

// childActivation takes its sockets the way a Go app using go-systemd
// does, which checks LISTEN_PID against its own pid, and greets one
// connection on each with the socket's LISTEN_FDNAMES name.
func childActivation() int {
	byName, err := activation.ListenersWithNames()
	if err != nil {
		fmt.Fprintln(os.Stderr, "activation:", err)
		return 3
	}
	if len(byName) == 0 {
		fmt.Fprintln(os.Stderr, "activation found no sockets; LISTEN_PID", os.Getenv("LISTEN_PID"), "pid", os.Getpid())
		return 4
	}
	for name, ls := range byName {
		for _, l := range ls {
			c, err := l.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, "accept:", err)
				return 5
			}
			fmt.Fprintf(c, "%s\n", name)
			c.Close()
		}
	}
	return 0
}

func deadline(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// passToChild starts the test binary as a child holding l's socket as fd 3,
// connects to dial, and returns what the child said.
func passToChild(t *testing.T, l *Listener, network, dial string) string {
	t.Helper()
	ctx := deadline(t)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	// atexit_sleep_ms: a -race child would otherwise linger 1s at exit.
	cmd.Env = append(os.Environ(), childEnv+"=accept", "LISTEN_FDS=1", "LISTEN_FDNAMES="+l.Name(), "GORACE=atexit_sleep_ms=0")
	cmd.ExtraFiles = []*os.File{l.File()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, dial)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("dial %s: %v", dial, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	werr := cmd.Wait()
	if err != nil || werr != nil {
		t.Fatalf("reading greeting: %v; child: %v; stderr: %s", err, werr, stderr.String())
	}
	want := fmt.Sprintf("hello from %d names=%s\n", cmd.Process.Pid, l.Name())
	if line != want {
		t.Fatalf("child said %q, want %q", line, want)
	}
	return line
}

func mustParse(t *testing.T, s string) Addr {
	t.Helper()
	a, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func checkParentFD(t *testing.T, l *Listener) {
	t.Helper()
	rc, err := l.File().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		fdFlags, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
		if err != nil || fdFlags&unix.FD_CLOEXEC == 0 {
			t.Errorf("keel's descriptor is not close-on-exec: %#x %v", fdFlags, err)
		}
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK != 0 {
			t.Errorf("socket is not in blocking mode: %#x %v", fl, err)
		}
		if l.Addr().Network != TCP {
			return
		}
		reuse, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR)
		if err != nil || reuse != 1 {
			t.Errorf("SO_REUSEADDR = %d, %v", reuse, err)
		}
	})
}

func skipWithoutIPv6(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	l.Close()
}

func TestListenTCPv4PassedToChild(t *testing.T) {
	l, err := Listen(mustParse(t, "127.0.0.1:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkParentFD(t, l)
	ta := l.LocalAddr().(*net.TCPAddr)
	if !ta.IP.Equal(net.IPv4(127, 0, 0, 1)) || ta.Port == 0 {
		t.Fatalf("bound to %v", ta)
	}
	passToChild(t, l, "tcp", ta.String())
	// keel still holds it: a second child serves the same socket.
	passToChild(t, l, "tcp", ta.String())
}

func TestListenTCPv6PassedToChild(t *testing.T) {
	skipWithoutIPv6(t)
	l, err := Listen(mustParse(t, "[::1]:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkParentFD(t, l)
	ta := l.LocalAddr().(*net.TCPAddr)
	if !ta.IP.Equal(net.IPv6loopback) {
		t.Fatalf("bound to %v", ta)
	}
	passToChild(t, l, "tcp6", ta.String())
}

func TestListenEveryInterfaceIsDualStack(t *testing.T) {
	skipWithoutIPv6(t)
	l, err := Listen(mustParse(t, ":0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.LocalAddr().(*net.TCPAddr).Port
	passToChild(t, l, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	passToChild(t, l, "tcp6", fmt.Sprintf("[::1]:%d", port))

	only, err := Listen(mustParse(t, ":0"), Options{IPv6Only: true})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	port = only.LocalAddr().(*net.TCPAddr).Port
	c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("an IPv6-only socket accepted an IPv4 connection")
	}
}

func TestListenUnixPassedToChild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkParentFD(t, l)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file mode %v, want a socket with 0660", fi.Mode())
	}
	passToChild(t, l, "unix", path)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left the socket file: %v", err)
	}
}

func TestListenUnixMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := Listen(mustParse(t, "unix://"+path), Options{Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestListenUnixStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	// A crashed owner leaves its socket file behind.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: path})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket file is missing: %v", err)
	}
	l, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err != nil {
		t.Fatalf("stale socket was not replaced: %v", err)
	}
	defer l.Close()
	passToChild(t, l, "unix", path)
}

func TestListenUnixLiveSocketIsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		// Answer the liveness probe.
		c, err := live.Accept()
		if err == nil {
			c.Close()
		}
	}()
	_, err = Listen(mustParse(t, "unix://"+path), Options{})
	if err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("Listen on a live socket: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the live socket's file was removed: %v", err)
	}
}

func TestListenUnixRefusesOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("the regular file was touched")
	}
}

func TestListenUnixMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "app.sock")
	_, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err == nil || !strings.Contains(err.Error(), "create the directory") {
		t.Fatalf("Listen in a missing directory: %v", err)
	}
}

func TestUnixCloseKeepsAReplacedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	l, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else takes the path over.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed a file it did not create: %v", err)
	}
}

func TestListenAddressInUse(t *testing.T) {
	l, err := Listen(mustParse(t, "127.0.0.1:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.LocalAddr().(*net.TCPAddr).Port
	_, err = Listen(mustParse(t, fmt.Sprintf("127.0.0.1:%d", port)), Options{})
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "another process holds the address") {
		t.Fatalf("second Listen: %v", err)
	}
}

func TestListenBacklogIsSomaxconn(t *testing.T) {
	// The backlog is not observable through the socket API; /proc/net/tcp
	// does not show it either. What we can check: Somaxconn reads the sysctl.
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Skip("no /proc/sys/net/core/somaxconn")
	}
	var want int
	fmt.Sscan(string(b), &want)
	if got := Somaxconn(); got != min(want, 65535) {
		t.Fatalf("Somaxconn() = %d, want %d", got, want)
	}
}

func TestListenHostName(t *testing.T) {
	l, err := Listen(mustParse(t, "localhost:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.LocalAddr().(*net.TCPAddr).IP.IsLoopback() {
		t.Fatalf("localhost bound to %v", l.LocalAddr())
	}
	if l.Name() != "tcp-localhost-0" {
		t.Fatalf("name %q", l.Name())
	}
}

func TestListenGroup(t *testing.T) {
	const n = 3
	group, err := ListenGroup(mustParse(t, "127.0.0.1:0"), n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range group {
			l.Close()
		}
	}()
	port := group[0].LocalAddr().(*net.TCPAddr).Port
	for i, l := range group {
		if p := l.LocalAddr().(*net.TCPAddr).Port; p != port {
			t.Fatalf("member %d bound port %d, want %d", i, p, port)
		}
		if l.Name() != "tcp-127.0.0.1-0" {
			t.Fatalf("member %d name %q", i, l.Name())
		}
		rc, _ := l.File().SyscallConn()
		rc.Control(func(fd uintptr) {
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT)
			if err != nil || v != 1 {
				t.Errorf("member %d SO_REUSEPORT = %d, %v", i, v, err)
			}
		})
	}
	// The kernel spreads connections over the members by a hash of the
	// 4-tuple: dial until every member has had one (bounded).
	ctx := deadline(t)
	got := make(chan int, 1024)
	for i, l := range group {
		nl, err := net.FileListener(l.File())
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		go func() {
			for {
				c, err := nl.Accept()
				if err != nil {
					return
				}
				c.Close()
				select {
				case got <- i:
				default:
				}
			}
		}()
	}
	seen := map[int]bool{}
	for len(seen) < n {
		if ctx.Err() != nil {
			t.Fatalf("only members %v accepted", seen)
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, c)
		c.Close()
		select {
		case i := <-got:
			seen[i] = true
		case <-ctx.Done():
		}
	}
}

func TestListenGroupRejectsUnix(t *testing.T) {
	if _, err := ListenGroup(mustParse(t, "unix:///tmp/x.sock"), 2, Options{}); err == nil {
		t.Fatal("ListenGroup on a unix address succeeded")
	}
}

func TestFileAddr(t *testing.T) {
	l, err := Listen(mustParse(t, "127.0.0.1:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := FileAddr(l.File())
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != l.LocalAddr().String() {
		t.Fatalf("FileAddr = %v, want %v", a, l.LocalAddr())
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	u, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if a, err := FileAddr(u.File()); err != nil || a.String() != path {
		t.Fatalf("FileAddr(unix) = %v, %v", a, err)
	}
}

// TestGoSystemdActivationAcceptsTheSockets passes a TCP and a unix socket
// to a child that takes them with go-systemd's activation package. The
// child is started through sh, whose exec keeps the pid, so LISTEN_PID can
// be the child's own pid (keel's proc package has a pre-exec step for this).
func TestGoSystemdActivationAcceptsTheSockets(t *testing.T) {
	tcp, err := Listen(mustParse(t, "127.0.0.1:0"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	path := filepath.Join(t.TempDir(), "app.sock")
	ux, err := Listen(mustParse(t, "unix://"+path), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()

	ctx := deadline(t)
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=activation", "GORACE=atexit_sleep_ms=0",
		"LISTEN_FDS=2", "LISTEN_FDNAMES="+FDNames(tcp.Addr(), ux.Addr()))
	cmd.ExtraFiles = []*os.File{tcp.File(), ux.File()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v; stderr: %s", err, stderr.String())
		}
	}()
	// Dial both before reading: the child accepts in map order.
	var conns []net.Conn
	var names []string
	for _, c := range []struct{ network, addr, name string }{
		{"tcp", tcp.LocalAddr().String(), tcp.Name()},
		{"unix", path, ux.Name()},
	} {
		var d net.Dialer
		conn, err := d.DialContext(ctx, c.network, c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		conns = append(conns, conn)
		names = append(names, c.name)
	}
	for i, conn := range conns {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != names[i]+"\n" {
			t.Fatalf("socket %d: child said %q, %v; want its name %q", i, line, err, names[i])
		}
	}
}
