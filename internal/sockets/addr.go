package sockets

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// Networks of an Addr.
const (
	TCP  = "tcp"
	Unix = "unix"
)

// maxUnixPath is the longest path a sockaddr_un can hold on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxUnixPath = 107

// Addr is one parsed `listen` address.
type Addr struct {
	// Network is TCP or Unix.
	Network string
	// Host is an IP literal (without brackets or zone brackets) or a host
	// name; "" means every interface. TCP only.
	Host string
	// Port is the TCP port; 0 asks the kernel for a free one.
	Port int
	// Path is the absolute path of a unix socket. Unix only.
	Path string
}

// Parse parses one `listen` value: ":3000", "127.0.0.1:3000", "[::1]:3000",
// "tcp://host:port" or "unix:///abs/path". It returns an error that says
// which forms are accepted when s is none of them.
func Parse(s string) (Addr, error) {
	orig := s
	bad := func(why string) (Addr, error) {
		return Addr{}, fmt.Errorf("listen address %q: %s (want \":3000\", \"127.0.0.1:3000\", \"[::1]:3000\", \"tcp://host:port\" or \"unix:///abs/path\")", orig, why)
	}
	if rest, ok := strings.CutPrefix(s, "unix://"); ok {
		if rest == "" || !filepath.IsAbs(rest) {
			return bad("a unix socket needs an absolute path")
		}
		if strings.ContainsRune(rest, 0) {
			return bad("the path contains a NUL byte")
		}
		if len(rest) > maxUnixPath {
			return bad(fmt.Sprintf("the path is %d bytes long; a unix socket path may have at most %d", len(rest), maxUnixPath))
		}
		return Addr{Network: Unix, Path: filepath.Clean(rest)}, nil
	}
	if i := strings.Index(s, "://"); i >= 0 {
		if s[:i] != "tcp" {
			return bad(fmt.Sprintf("unknown scheme %q", s[:i]))
		}
		s = s[i+3:]
		if strings.ContainsAny(s, "/?#") {
			return bad("a tcp address has no path")
		}
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return bad("not host:port")
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 || portStr[0] == '+' {
		return bad("the port must be a number from 0 to 65535")
	}
	if host != "" {
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Is4() && strings.Contains(s, "[") {
				return bad("an IPv4 address is written without brackets")
			}
			if ip.Is6() && !strings.Contains(s, "[") {
				return bad("an IPv6 address is written in brackets, as [::1]:3000")
			}
			host = ip.String()
		} else if !validHostName(host) {
			return bad(fmt.Sprintf("%q is neither an IP address nor a host name", host))
		}
	}
	return Addr{Network: TCP, Host: host, Port: port}, nil
}

// TCPAddr is the address a program means when it listens on host and port,
// as Node's server.listen(port, host) does: host "" is every interface.
func TCPAddr(host string, port int) Addr {
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
	}
	return Addr{Network: TCP, Host: host, Port: port}
}

func validHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}

// String returns the canonical form: ":3000", "127.0.0.1:3000",
// "[::1]:3000", "localhost:3000" or "unix:///path". Parse(a.String())
// returns a again.
func (a Addr) String() string {
	switch a.Network {
	case Unix:
		return "unix://" + a.Path
	case TCP:
		return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
	}
	return fmt.Sprintf("invalid address %#v", a)
}

// Name is the address's name in LISTEN_FDNAMES: "tcp-3000" for every
// interface, "tcp-<host>-<port>" for one host (an IPv6 host with ':' written
// as '_'), "unix-<path>". Characters systemd does not allow in a name
// (':' and anything outside printable ASCII) become '_'.
func (a Addr) Name() string {
	var s string
	switch a.Network {
	case Unix:
		s = "unix-" + a.Path
	case TCP:
		if a.Host == "" {
			s = "tcp-" + strconv.Itoa(a.Port)
		} else {
			s = "tcp-" + a.Host + "-" + strconv.Itoa(a.Port)
		}
	default:
		s = "invalid"
	}
	b := []byte(s)
	for i, c := range b {
		if c == ':' || c <= ' ' || c >= 0x7f {
			b[i] = '_'
		}
	}
	if len(b) > 255 { // systemd's FDNAME_MAX
		b = b[:255]
	}
	return string(b)
}

// FDNames is the value of LISTEN_FDNAMES for sockets passed in this order.
func FDNames(addrs ...Addr) string {
	names := make([]string, len(addrs))
	for i, a := range addrs {
		names[i] = a.Name()
	}
	return strings.Join(names, ":")
}

// MatchPort returns the index of the first TCP address in addrs whose port is
// port, or -1. It is the rule keel applies to a Node app that listens on a
// port: a port named in `listen` is keel's, whatever host the app names.
func MatchPort(addrs []Addr, port int) int {
	for i, a := range addrs {
		if a.Network == TCP && a.Port == port && port != 0 {
			return i
		}
	}
	return -1
}
