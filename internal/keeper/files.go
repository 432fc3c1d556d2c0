package keeper

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// RunDir is the directory of keeper sockets and state files of a home.
func RunDir(home string) string { return filepath.Join(home, "run") }

// maxSunPath is the longest path a sockaddr_un holds (108 bytes with the
// terminating NUL).
const maxSunPath = 107

// paths are one keeper's files.
type paths struct {
	id     string
	dir    string
	sock   string
	state  string
	notify string
	log    string
}

func pathsFor(home, id string) paths {
	dir := RunDir(home)
	return paths{
		id:     id,
		dir:    dir,
		sock:   filepath.Join(dir, id+".sock"),
		state:  filepath.Join(dir, id+".json"),
		notify: filepath.Join(dir, id+".notify"),
		log:    filepath.Join(dir, id+".log"),
	}
}

// hostPaths are the files of a keeper process that holds several
// instances of one app (Config.Host): the socket on which the daemon asks
// it to spawn one more, and its diagnostic log. The names are not
// validIDs, so Survivors never takes them for an instance's.
type hostPaths struct {
	sock string
	log  string
}

func hostPathsFor(home, host string) hostPaths {
	dir := RunDir(home)
	return hostPaths{sock: filepath.Join(dir, host+".host.sock"), log: filepath.Join(dir, host+".host.log")}
}

func (p hostPaths) remove() error {
	var errs []error
	for _, f := range []string{p.sock, p.log} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// keeperLog is the diagnostic log of the keeper process that runs the
// instance st describes.
func keeperLog(home string, st *State) string {
	if st.Host != "" {
		return hostPathsFor(home, st.Host).log
	}
	return pathsFor(home, st.ID).log
}

// remove deletes every file of the keeper, ignoring those not there.
func (p paths) remove() error {
	var errs []error
	for _, f := range []string{p.sock, p.state, p.notify, p.log} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newID returns a short random id: 12 characters of [a-z0-9].
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [12]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// validID reports whether id could have come from newID (so it is safe in
// a path).
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ensureDirs creates home and its run directory, owner-only.
func ensureDirs(home string) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", home, err)
	}
	if err := os.Mkdir(RunDir(home), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", RunDir(home), err)
	}
	return nil
}

// withSunPath calls fn with an address for the unix socket at path: path
// itself when it fits a sockaddr_un, otherwise the same file reached
// through /proc/self/fd/<n>/ with the directory held open while fn runs.
func withSunPath(path string, fn func(addr string) error) error {
	if len(path) <= maxSunPath {
		return fn(path)
	}
	dir := filepath.Dir(path)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer unix.Close(fd)
	addr := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(path)
	if len(addr) > maxSunPath {
		return fmt.Errorf("socket name %s is too long", filepath.Base(path))
	}
	return fn(addr)
}

// listenUnix listens on a stream socket at path. The socket file is not
// removed on Close: its owner removes it.
func listenUnix(path string) (*net.UnixListener, error) {
	var ln *net.UnixListener
	err := withSunPath(path, func(addr string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// dialUnix connects to the stream socket at path.
func dialUnix(path string) (*net.UnixConn, error) {
	var c *net.UnixConn
	err := withSunPath(path, func(addr string) error {
		var err error
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	return c, err
}

// writeState writes the state file atomically (temporary file, rename).
func writeState(path string, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return nil
}

func readState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &st, nil
}
