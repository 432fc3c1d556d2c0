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
	f1, name, err := s.listenFor("web", 0, keeper.ListenRequest{Host: "127.0.0.1", Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	if name != "cluster-tcp-127.0.0.1-0" {
		t.Fatalf("name %q", name)
	}
	f2, name2, err := s.listenFor("web", 0, keeper.ListenRequest{Host: "127.0.0.1", Port: 0, Backlog: 5})
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
	if _, _, err := s.listenFor("other", 0, keeper.ListenRequest{Host: "127.0.0.1", Port: port}); !errors.Is(err, syscall.EADDRINUSE) {
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
	files, names, err := old.files(app, 0) // opened lazily
	if err != nil || len(files) != 1 || !slices.Equal(names, []string{"tcp-127.0.0.1-0"}) {
		t.Fatalf("files: %v %v %v", files, names, err)
	}
	cl, clName, err := old.listenFor("web", 0, keeper.ListenRequest{Host: "127.0.0.1"})
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
	s.adoptionDone()

	got, _, err := s.files(app, 0)
	if err != nil || len(got) != 1 || ino(t, got[0]) != wantListen {
		t.Fatalf("files after adoption: %v %v", got, err)
	}
	f, name, err := s.listenFor("web", 0, keeper.ListenRequest{Host: "127.0.0.1"})
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
	s.adoptionDone()
	s.prune([]*spec.App{app})
	if len(s.adopted) != 0 || s.cluster["gone"] != nil || s.cluster["web"] == nil {
		t.Fatalf("after prune: adopted %v, cluster %v", s.adopted, s.cluster)
	}
	if !refused(t, lostAddr) {
		t.Fatalf("an unclaimed adopted socket still accepts on %s", lostAddr)
	}
}

// landed dials addr n times and counts, by file, where the connections
// queued (accepting and closing them).
func landed(t *testing.T, addr string, n int, files []*os.File) []int {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	counts := make([]int, len(files))
	for i, f := range files {
		rc, _ := f.SyscallConn()
		rc.Control(func(fd uintptr) {
			for {
				nfd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				if err != nil {
					return
				}
				unix.Close(nfd)
				counts[i]++
			}
		})
	}
	return counts
}

func nonblock(t *testing.T, files []*os.File) {
	t.Helper()
	for _, f := range files {
		rc, _ := f.SyscallConn()
		rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), true) })
	}
}

// Each instance accepts on a socket of its own, and new connections go to
// the instances that serve.
func TestInstancesShareAPortThroughMembersSteeredToServingOnes(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := testSet(t)
	app := &spec.App{Name: "web", Listen: []string{"127.0.0.1:0"}}
	if err := s.ensure(app); err != nil {
		t.Fatal(err)
	}
	var members []*os.File
	for slot := 2; slot >= 0; slot-- { // in any order
		files, _, err := s.files(app, slot)
		if err != nil {
			t.Fatal(err)
		}
		members = append([]*os.File{files[0]}, members...)
	}
	again, _, _ := s.files(app, 1)
	if again[0] != members[1] || ino(t, members[0]) == ino(t, members[1]) || ino(t, members[1]) == ino(t, members[2]) {
		t.Fatal("instances do not each have a socket of their own")
	}
	nonblock(t, members)
	addr := s.names(app)[0]
	for _, m := range members {
		if a, _ := sockets.FileAddr(m); a.String() != addr {
			t.Fatalf("a member is bound to %v, not %s", a, addr)
		}
	}
	s.servingChanged("web", 0, true)
	s.servingChanged("web", 2, true)
	if got := landed(t, addr, 40, members); got[1] != 0 || got[0] < 8 || got[2] < 8 {
		t.Fatalf("with instances 0 and 2 serving, 40 connections landed %v", got)
	}
	s.servingChanged("web", 2, false)
	if got := landed(t, addr, 10, members); got[0] != 10 {
		t.Fatalf("with instance 0 serving, 10 connections landed %v", got)
	}
	// The last one down: connections queue where they went last.
	s.servingChanged("web", 0, false)
	if got := landed(t, addr, 5, members); got[0] != 5 {
		t.Fatalf("with no instance serving, 5 connections landed %v", got)
	}
	// A reload: the new process of slot 1 comes up before the old goes.
	s.servingChanged("web", 1, true)
	s.servingChanged("web", 1, true)
	s.servingChanged("web", 1, false)
	if got := landed(t, addr, 5, members); got[1] != 5 {
		t.Fatalf("with instance 1 serving, 5 connections landed %v", got)
	}
}

// A new daemon keeps steering by slot when the survivors hand back every
// member up to the last, and leaves the spreading to the kernel when one is
// missing (its position in the kernel's group is then unknown).
func TestAdoptedGroupsKeepTheirSlots(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, gap := range []bool{false, true} {
		old := testSet(t)
		app := &spec.App{Name: "web", Listen: []string{"127.0.0.1:0"}}
		var members []*os.File
		for slot := 0; slot < 3; slot++ {
			files, _, err := old.files(app, slot)
			if err != nil {
				t.Fatal(err)
			}
			members = append(members, files[0])
		}
		addr := old.names(app)[0]
		ino1 := ino(t, members[1])
		s := testSet(t)
		for _, slot := range []int{2, 0, 1} {
			if gap && slot == 1 {
				continue
			}
			s.adopt("web", []keeper.Socket{{Name: "tcp-127.0.0.1-0", Kind: keeper.SocketListen, Slot: slot, File: dup(t, members[slot])}})
		}
		var copies []*os.File
		for slot := 0; slot < 3; slot++ {
			if gap && slot == 1 {
				old.byAddr[sockets.Addr{Network: sockets.TCP, Host: "127.0.0.1"}.String()].members[1].close()
				continue
			}
			copies = append(copies, dup(t, members[slot]))
		}
		old.close()
		s.adoptionDone()
		if err := s.ensure(app); err != nil {
			t.Fatal(err)
		}
		files, _, err := s.files(app, 1)
		if err != nil {
			t.Fatal(err)
		}
		if gap == (ino(t, files[0]) == ino1) {
			t.Fatalf("gap %v: instance 1's socket is the old one: %v", gap, !gap)
		}
		if gap {
			copies = []*os.File{copies[0], files[0], copies[1]}
		}
		nonblock(t, copies)
		s.servingChanged("web", 2, true)
		got := landed(t, addr, 30, copies)
		if !gap && got[2] != 30 {
			t.Fatalf("steered to instance 2 after adoption, 30 connections landed %v", got)
		}
		if gap && (got[0] == 0 || got[1] == 0 || got[2] == 0) {
			t.Fatalf("left to the kernel after a gap, 30 connections landed %v", got)
		}
		for _, c := range copies {
			if gap && c == files[0] {
				continue
			}
			c.Close()
		}
		s.close()
	}
}
