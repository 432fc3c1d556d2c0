package sockets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultUnixMode is the mode of a unix socket's file when Options.Mode is 0.
const DefaultUnixMode os.FileMode = 0o660

// Options tune Listen. The zero value is what `listen` sockets use.
type Options struct {
	// ReusePort sets SO_REUSEPORT, so that other sockets with the option
	// (and the same owner) may bind the same address. ListenGroup sets it.
	ReusePort bool
	// Groupable sets SO_REUSEPORT after the bind: the bind still fails if
	// any other socket has the address (one of another SO_REUSEPORT group
	// too), but once listening the socket starts a group that Join adds
	// members to. Only for TCP.
	Groupable bool
	// IPv6Only makes a socket for every interface ("" or "::") accept IPv6
	// only, as Node's listen({ipv6Only: true}). By default such a socket is
	// dual-stack.
	IPv6Only bool
	// Backlog overrides the accept queue length; 0 means Somaxconn().
	Backlog int
	// Mode is a unix socket file's mode; 0 means DefaultUnixMode.
	Mode os.FileMode
}

// Listener is one listening socket keel owns.
type Listener struct {
	addr  Addr
	file  *os.File
	local net.Addr
	// dev and ino identify the unix socket file this listener created.
	dev, ino uint64
}

// Addr is the address the listener was opened for (as parsed, not resolved).
func (l *Listener) Addr() Addr { return l.addr }

// Name is Addr().Name(), the listener's LISTEN_FDNAMES entry.
func (l *Listener) Name() string { return l.addr.Name() }

// LocalAddr is the address the socket is bound to (a *net.TCPAddr with the
// real port, or a *net.UnixAddr).
func (l *Listener) LocalAddr() net.Addr { return l.local }

// File is the socket, for exec.Cmd.ExtraFiles or an SCM_RIGHTS message. The
// Listener owns it: do not close it; Close the Listener.
func (l *Listener) File() *os.File { return l.file }

// Close closes keel's descriptor of the socket; processes that inherited it
// keep their own. For a unix socket it also removes the socket file, if the
// file at the path is still the one this listener created.
func (l *Listener) Close() error {
	err := l.file.Close()
	if l.addr.Network == Unix {
		var st unix.Stat_t
		if unix.Lstat(l.addr.Path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
			if rerr := os.Remove(l.addr.Path); rerr != nil && err == nil {
				err = rerr
			}
		}
	}
	return err
}

// Listen opens a listening socket for a. See the package documentation for
// the socket's properties. Errors name the address and, where the fix is
// clear, say what to do (EADDRINUSE: another process has the port).
func Listen(a Addr, o Options) (*Listener, error) {
	switch a.Network {
	case TCP:
		return listenTCP(a, o)
	case Unix:
		return listenUnix(a, o)
	}
	return nil, fmt.Errorf("listen on %v: unknown network %q", a, a.Network)
}

// Join opens one more member of the SO_REUSEPORT group that f (a TCP
// socket listening with SO_REUSEPORT, see Options.Groupable) belongs to:
// a socket bound to f's exact address. a is what the new listener reports
// as its Addr. Members added in turn take the next positions in the
// group (see Steer).
func Join(f *os.File, a Addr, o Options) (*Listener, error) {
	local, err := FileAddr(f)
	if err != nil {
		return nil, fmt.Errorf("joining the group of %v: %w", a, err)
	}
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("joining the group of %v: not a tcp socket", a)
	}
	bindTo := TCPAddr(tcp.IP.String(), tcp.Port)
	if tcp.Zone != "" {
		bindTo.Host += "%" + tcp.Zone
	}
	o.ReusePort, o.Groupable = true, false
	l, err := listenTCP(bindTo, o)
	if err != nil {
		return nil, err
	}
	l.addr = a
	return l, nil
}

// ReusesPort reports whether the socket f has SO_REUSEPORT set, so that
// Join can add members to its group.
func ReusesPort(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	v := 0
	rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT) })
	return v == 1
}

// ListenGroup opens n sockets bound to the same address with SO_REUSEPORT,
// one per instance. If a's port is 0, the first socket picks a free port
// and the others bind that one. Unix addresses cannot form a group. On error
// every socket opened so far is closed.
func ListenGroup(a Addr, n int, o Options) ([]*Listener, error) {
	if a.Network != TCP {
		return nil, fmt.Errorf("listen on %v: SO_REUSEPORT groups need a tcp address", a)
	}
	if n < 1 {
		return nil, fmt.Errorf("listen on %v: a group needs at least one socket, got %d", a, n)
	}
	o.ReusePort = true
	group := make([]*Listener, 0, n)
	fail := func(err error) ([]*Listener, error) {
		for _, l := range group {
			l.Close()
		}
		return nil, err
	}
	bindTo := a
	for i := 0; i < n; i++ {
		l, err := listenTCP(bindTo, o)
		if err != nil {
			return fail(err)
		}
		l.addr = a
		group = append(group, l)
		if i == 0 && a.Port == 0 {
			bindTo.Port = l.local.(*net.TCPAddr).Port
		}
	}
	return group, nil
}

// Somaxconn is the kernel's cap on accept queues (net.core.somaxconn), the
// backlog keel's sockets get. It falls back to 4096, the kernel's default
// since Linux 5.4, when the value cannot be read; it is at most 65535
// because older kernels store the backlog in 16 bits.
func Somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 4096
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		return 4096
	}
	return min(n, 65535)
}

func (o Options) backlog() int {
	if o.Backlog > 0 {
		return o.Backlog
	}
	return Somaxconn()
}

// resolveTCP turns a into the sockaddr to bind and its family. Host ""
// is the IPv6 wildcard (dual-stack unless IPv6Only), or the IPv4 wildcard
// where the kernel has no IPv6.
func resolveTCP(a Addr) (unix.Sockaddr, int, error) {
	if a.Host == "" {
		if ipv6Available() {
			return &unix.SockaddrInet6{Port: a.Port}, unix.AF_INET6, nil
		}
		return &unix.SockaddrInet4{Port: a.Port}, unix.AF_INET, nil
	}
	ip, err := netip.ParseAddr(a.Host)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", a.Host)
		if lerr != nil {
			return nil, 0, fmt.Errorf("resolving %q: %w", a.Host, lerr)
		}
		if len(ips) == 0 {
			return nil, 0, fmt.Errorf("resolving %q: no addresses", a.Host)
		}
		// Like net.Listen: the first IPv4 address if there is one.
		ip = ips[0]
		for _, x := range ips {
			if x.Unmap().Is4() {
				ip = x
				break
			}
		}
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return &unix.SockaddrInet4{Port: a.Port, Addr: ip.As4()}, unix.AF_INET, nil
	}
	sa := &unix.SockaddrInet6{Port: a.Port, Addr: ip.As16()}
	if z := ip.Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			if n, nerr := strconv.Atoi(z); nerr == nil {
				sa.ZoneId = uint32(n)
			} else {
				return nil, 0, fmt.Errorf("zone of %q: %w", a.Host, err)
			}
		} else {
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, unix.AF_INET6, nil
}

func ipv6Available() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func listenTCP(a Addr, o Options) (*Listener, error) {
	wrap := func(step string, err error) error {
		err = os.NewSyscallError(step, err)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %v: %w (another process holds the address; stop it or choose another port)", a, err)
		}
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("listen on %v: %w (ports below 1024 need privileges)", a, err)
		}
		return fmt.Errorf("listen on %v: %w", a, err)
	}
	sa, family, err := resolveTCP(a)
	if err != nil {
		return nil, fmt.Errorf("listen on %v: %w", a, err)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, wrap("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, wrap("setsockopt SO_REUSEADDR", err)
	}
	if o.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return nil, wrap("setsockopt SO_REUSEPORT", err)
		}
	}
	if family == unix.AF_INET6 {
		v6only := 0
		if o.IPv6Only {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return nil, wrap("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, wrap("bind", err)
	}
	if o.Groupable {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return nil, wrap("setsockopt SO_REUSEPORT", err)
		}
	}
	if err := unix.Listen(fd, o.backlog()); err != nil {
		return nil, wrap("listen", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return nil, wrap("getsockname", err)
	}
	ok = true
	return &Listener{addr: a, file: os.NewFile(uintptr(fd), a.String()), local: sockaddrToNet(bound)}, nil
}

func listenUnix(a Addr, o Options) (*Listener, error) {
	wrap := func(step string, err error) error {
		return fmt.Errorf("listen on %v: %w", a, os.NewSyscallError(step, err))
	}
	if err := removeStale(a.Path); err != nil {
		return nil, fmt.Errorf("listen on %v: %w", a, err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, wrap("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: a.Path}); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("listen on %v: %w (create the directory first)", a, os.NewSyscallError("bind", err))
		}
		return nil, wrap("bind", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(a.Path, &st); err != nil {
		return nil, wrap("stat", err)
	}
	// From here on the file is ours: remove it if listening fails.
	defer func() {
		if !ok {
			os.Remove(a.Path)
		}
	}()
	mode := o.Mode
	if mode == 0 {
		mode = DefaultUnixMode
	}
	// Before listen(2): until then a connect is refused, so no client gets
	// in under the umask's mode.
	if err := unix.Fchmodat(unix.AT_FDCWD, a.Path, uint32(mode.Perm()), 0); err != nil {
		return nil, wrap("chmod", err)
	}
	if err := unix.Listen(fd, o.backlog()); err != nil {
		return nil, wrap("listen", err)
	}
	ok = true
	return &Listener{
		addr:  a,
		file:  os.NewFile(uintptr(fd), a.String()),
		local: &net.UnixAddr{Net: "unix", Name: a.Path},
		dev:   uint64(st.Dev),
		ino:   uint64(st.Ino),
	}, nil
}

// removeStale removes path if it is a unix socket nothing answers on. A
// missing path is fine; a live socket or another kind of file is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening on it; stop it or choose another path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and cannot be checked for life: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	return nil
}

// FileAddr is the address a listening socket is bound to, read from the
// descriptor (getsockname): a *net.TCPAddr or a *net.UnixAddr. It does not
// change the file's blocking mode.
func FileAddr(f *os.File) (net.Addr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("address of %s: %w", f.Name(), err)
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil {
		return nil, fmt.Errorf("address of %s: %w", f.Name(), err)
	}
	if serr != nil {
		return nil, fmt.Errorf("address of %s: %w", f.Name(), os.NewSyscallError("getsockname", serr))
	}
	a := sockaddrToNet(sa)
	if a == nil {
		return nil, fmt.Errorf("address of %s: not a tcp or unix socket", f.Name())
	}
	return a, nil
}

func sockaddrToNet(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		zone := ""
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				zone = ifi.Name
			} else {
				zone = strconv.Itoa(int(sa.ZoneId))
			}
		}
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port, Zone: zone}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Net: "unix", Name: sa.Name}
	}
	return nil
}
