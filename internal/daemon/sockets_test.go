package daemon

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/keeper"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

func testSet(t *testing.T) *socketSet {
	t.Helper()
	s := newSocketSet(slog.New(slog.DiscardHandler))
	t.Cleanup(s.close)
	return s
}

func ino(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) })
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

func dup(t *testing.T, f *os.File) *os.File {
	t.Helper()
	rc, _ := f.SyscallConn()
	var fd int
	var derr error
	rc.Control(func(raw uintptr) { fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3) })
	if derr != nil {
		t.Fatal(derr)
	}
	return os.NewFile(uintptr(fd), f.Name())
}

func refused(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if c != nil {
		c.Close()
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func TestClusterSocketsAreBoundOncePerAppAndAddress(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := testSet(t)
	f1, name, err := s.listenFor("web", keeper.ListenRequest{Host: "127.0.0.1", Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	if name != "cluster-tcp-127.0.0.1-0" {
		t.Fatalf("name %q", name)
	}
	f2, name2, err := s.listenFor("web", keeper.ListenRequest{Host: "127.0.0.1", Port: 0, Backlog: 5})
	if err != nil || f2 != f1 || name2 != name {
		t.Fatalf("second request: %v %v %q", f2, err, name2)
	}
	bound := s.names(&spec.App{Name: "web"})
	if len(bound) != 1 {
		t.Fatalf("names %q", bound)
	}
	_, portStr, _ := net.SplitHostPort(bound[0])
	port, _ := strconv.Atoi(portStr)
	// Another app cannot have the same port: the app's server gets the
	// errno as its error code.
	if _, _, err := s.listenFor("other", keeper.ListenRequest{Host: "127.0.0.1", Port: port}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("another app on port %d: %v", port, err)
	}
	// Deleting the app closes its sockets.
	s.prune([]*spec.App{{Name: "other"}})
	if !refused(t, bound[0]) {
		t.Fatalf("%s still accepts after the app was deleted", bound[0])
	}
	if got := s.names(&spec.App{Name: "web"}); len(got) != 0 {
		t.Fatalf("names after delete %q", got)
	}
}

// A new daemon takes the sockets its survivors hold instead of binding
// their ports again (which would fail: they are in use).
func TestAdoptedSocketsAreSharedNotBoundAgain(t *testing.T) {
	defer goleak.VerifyNone(t)
	old := testSet(t)
	app := &spec.App{Name: "web", Listen: []string{"127.0.0.1:0"}}
	files, names, err := old.files(app) // opened lazily
	if err != nil || len(files) != 1 || !slices.Equal(names, []string{"tcp-127.0.0.1-0"}) {
		t.Fatalf("files: %v %v %v", files, names, err)
	}
	cl, clName, err := old.listenFor("web", keeper.ListenRequest{Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	wantListen, wantCluster := ino(t, files[0]), ino(t, cl)
	before := old.names(app)

	s := testSet(t)
	// Two surviving instances hand back the same sockets.
	for i := 0; i < 2; i++ {
		s.adopt("web", []keeper.Socket{
			{Name: "tcp-127.0.0.1-0", Kind: keeper.SocketListen, File: dup(t, files[0])},
			{Name: clName, Kind: keeper.SocketCluster, File: dup(t, cl)},
		})
	}
	// A socket that does not listen is refused.
	r, w, _ := os.Pipe()
	w.Close()
	s.adopt("web", []keeper.Socket{{Name: "tcp-9", Kind: keeper.SocketListen, File: r}})
	old.close() // the old daemon is gone; the survivors' copies remain

	got, _, err := s.files(app)
	if err != nil || len(got) != 1 || ino(t, got[0]) != wantListen {
		t.Fatalf("files after adoption: %v %v", got, err)
	}
	f, name, err := s.listenFor("web", keeper.ListenRequest{Host: "127.0.0.1"})
	if err != nil || name != clName || ino(t, f) != wantCluster {
		t.Fatalf("cluster socket after adoption: %v %q %v", f, name, err)
	}
	if after := s.names(app); !slices.Equal(after, before) {
		t.Fatalf("names %q, before the restart %q", after, before)
	}
	// What no app claims is closed once the defined apps are known.
	s.adopt("gone", []keeper.Socket{{Name: "cluster-tcp-0", Kind: keeper.SocketCluster, File: dup(t, cl)}})
	lost, _ := sockets.Listen(sockets.Addr{Network: sockets.TCP, Host: "127.0.0.1"}, sockets.Options{})
	lostAddr := lost.LocalAddr().String()
	s.adopt("web", []keeper.Socket{{Name: "tcp-127.0.0.1-1", Kind: keeper.SocketListen, File: dup(t, lost.File())}})
	lost.Close()
	s.prune([]*spec.App{app})
	if len(s.adopted) != 0 || s.cluster["gone"] != nil || s.cluster["web"] == nil {
		t.Fatalf("after prune: adopted %v, cluster %v", s.adopted, s.cluster)
	}
	if !refused(t, lostAddr) {
		t.Fatalf("an unclaimed adopted socket still accepts on %s", lostAddr)
	}
}
