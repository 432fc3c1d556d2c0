package serve

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The environment of socket activation (sd_listen_fds(3)).
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
	firstListenFD    = 3 // SD_LISTEN_FDS_START
)

// A Listener is a listening socket this process inherited from keel (or
// systemd) through socket activation.
type Listener struct {
	net.Listener
	// Name is the socket's name from LISTEN_FDNAMES (the i-th name for the
	// i-th socket), or "" if it has none.
	Name string
}

// Listeners returns the listening sockets passed to this process by socket
// activation, the protocol keel and systemd share: fds 3, 4, … announced by
// LISTEN_FDS, meant for the process whose pid is LISTEN_PID, named by the
// colon-separated LISTEN_FDNAMES.
//
// Listeners reads the environment once: it unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES, so that child processes do not take the sockets for their
// own, and marks the fds close-on-exec; a second call returns nothing.
//
// It returns:
//   - nil, nil if LISTEN_FDS is unset, or if LISTEN_PID is not this
//     process's pid (the sockets were meant for a parent, which is why the
//     pid is checked before an fd is trusted);
//   - the listeners, in fd order, with their names;
//   - an error if LISTEN_FDS or LISTEN_PID is malformed or an fd is not a
//     listening stream socket; no listener is left open then.
func Listeners() ([]Listener, error) {
	pidStr, fdsStr, namesStr := os.Getenv(envListenPID), os.Getenv(envListenFDs), os.Getenv(envListenFDNames)
	os.Unsetenv(envListenPID)
	os.Unsetenv(envListenFDs)
	os.Unsetenv(envListenFDNames)
	if fdsStr == "" {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		return nil, fmt.Errorf("serve: LISTEN_FDS is set but LISTEN_PID=%q is not a pid; the parent must set LISTEN_PID to this process's pid", pidStr)
	}
	if pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(fdsStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("serve: LISTEN_FDS=%q is not a count of file descriptors", fdsStr)
	}
	var names []string
	if namesStr != "" {
		names = strings.Split(namesStr, ":")
	}

	lns := make([]Listener, 0, n)
	for i := range n {
		fd := firstListenFD + i
		name := ""
		if i < len(names) {
			name = names[i]
		}
		ln, err := fileListener(fd, name)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			// Close the fds not looked at yet too: they are ours, unused.
			for j := fd + 1; j < firstListenFD+n; j++ {
				syscall.Close(j)
			}
			return nil, err
		}
		lns = append(lns, Listener{Listener: ln, Name: name})
	}
	return lns, nil
}

// fileListener turns inherited fd into a net.Listener. The fd itself is
// closed; the listener holds a duplicate, close-on-exec.
func fileListener(fd int, name string) (net.Listener, error) {
	syscall.CloseOnExec(fd)
	label := "LISTEN_FD_" + strconv.Itoa(fd)
	if name != "" {
		label = name
	}
	f := os.NewFile(uintptr(fd), label)
	if f == nil {
		return nil, fmt.Errorf("serve: fd %d from LISTEN_FDS is not open", fd)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("serve: fd %d (%q) from LISTEN_FDS is not a listening stream socket: %w", fd, name, err)
	}
	return ln, nil
}
