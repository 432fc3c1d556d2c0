package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketName is the control socket's file name inside KEEL_HOME.
const SocketName = "keel.sock"

// SocketPath returns the control socket of the keel whose state lives in
// home.
func SocketPath(home string) string { return filepath.Join(home, SocketName) }

// MaxSocketPath is the longest path a unix socket can be bound or dialled at
// on Linux (sun_path holds 108 bytes including the terminating NUL).
const MaxSocketPath = 107

// Listen binds the control socket at path and returns its listener, ready
// to accept:
//   - a socket file left at path by a daemon that is gone (nothing answers
//     on it) is removed first; if something does answer, Listen fails and
//     leaves it alone; any other kind of file at path is never removed;
//   - the socket is chmod'ed to 0600 after bind and before any accept, so
//     the umask does not matter.
//
// Closing the listener removes the socket file. Listen does not prevent two
// daemons from racing for the same path; the caller holds the daemon lock.
func Listen(path string) (*net.UnixListener, error) {
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than the %d a unix socket allows: use a shorter KEEL_HOME", path, len(path), MaxSocketPath)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("making %s private: %w", path, err)
	}
	return ln, nil
}

// removeStale removes a socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: move it out of the way", path)
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(context.Background(), "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another keel daemon is answering on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("checking whether %s is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// peer is what ConnContext learned about a connection's other end.
type peer struct {
	uid int
	pid int
	err error
}

type peerKey struct{}

// peerOf reads the peer credentials of an accepted unix connection.
func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("%T is not a unix socket connection", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: fmt.Errorf("reading peer credentials: %w", err)}
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{err: fmt.Errorf("reading peer credentials: %w", err)}
	}
	if credErr != nil {
		return peer{err: fmt.Errorf("reading peer credentials: %w", credErr)}
	}
	return peer{uid: int(cred.Uid), pid: int(cred.Pid)}
}

// connContext is the http1.Server's ConnContext: it records the peer's
// credentials once per connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}
