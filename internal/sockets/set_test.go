package sockets

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func testSet(t *testing.T) *Set {
	t.Helper()
	s := NewSet(slog.New(slog.DiscardHandler))
	t.Cleanup(s.Close)
	return s
}

// sync waits until the Set has applied what was published so far.
func (s *Set) sync() { s.do(func() {}) }

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
	s := testSet(t)
	f1, name, err := s.ListenFor("web", 0, TCPAddr("127.0.0.1", 0), false)
	if err != nil {
		t.Fatal(err)
	}
	if name != "cluster-tcp-127.0.0.1-0" {
		t.Fatalf("name %q", name)
	}
	f2, name2, err := s.ListenFor("web", 0, TCPAddr("127.0.0.1", 0), false)
	if err != nil || f2 != f1 || name2 != name {
		t.Fatalf("second request: %v %v %q", f2, err, name2)
	}
	bound := s.Names("web", nil)
	if len(bound) != 1 {
		t.Fatalf("names %q", bound)
	}
	_, portStr, _ := net.SplitHostPort(bound[0])
	port, _ := strconv.Atoi(portStr)
	// Another app cannot have the same port: the app's server gets the
	// errno as its error code.
	if _, _, err := s.ListenFor("other", 0, TCPAddr("127.0.0.1", port), false); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("another app on port %d: %v", port, err)
	}
	// Deleting the app closes its sockets.
	s.Prune(map[string][]string{"other": nil})
	if !refused(t, bound[0]) {
		t.Fatalf("%s still accepts after the app was deleted", bound[0])
	}
	if got := s.Names("web", nil); len(got) != 0 {
		t.Fatalf("names after delete %q", got)
	}
}

// A new daemon takes the sockets its survivors hold instead of binding
// their ports again (which would fail: they are in use).
func TestAdoptedSocketsAreSharedNotBoundAgain(t *testing.T) {
	old := testSet(t)
	listen := []string{"127.0.0.1:0"}
	files, names, err := old.Files("web", listen, 0) // opened lazily
	if err != nil || len(files) != 1 || !slices.Equal(names, []string{"tcp-127.0.0.1-0"}) {
		t.Fatalf("files: %v %v %v", files, names, err)
	}
	cl, clName, err := old.ListenFor("web", 0, TCPAddr("127.0.0.1", 0), false)
	if err != nil {
		t.Fatal(err)
	}
	wantListen, wantCluster := ino(t, files[0]), ino(t, cl)
	before := old.Names("web", listen)

	s := testSet(t)
	// Two surviving instances hand back the same sockets.
	for i := 0; i < 2; i++ {
		s.Adopt("web", []Adopted{
			{Name: "tcp-127.0.0.1-0", File: dup(t, files[0])},
			{Name: clName, Cluster: true, File: dup(t, cl)},
		})
	}
	// A socket that does not listen is refused.
	r, w, _ := os.Pipe()
	w.Close()
	s.Adopt("web", []Adopted{{Name: "tcp-9", File: r}})
	old.Close() // the old daemon is gone; the survivors' copies remain
	s.AdoptionDone()

	got, _, err := s.Files("web", listen, 0)
	if err != nil || len(got) != 1 || ino(t, got[0]) != wantListen {
		t.Fatalf("files after adoption: %v %v", got, err)
	}
	f, name, err := s.ListenFor("web", 0, TCPAddr("127.0.0.1", 0), false)
	if err != nil || name != clName || ino(t, f) != wantCluster {
		t.Fatalf("cluster socket after adoption: %v %q %v", f, name, err)
	}
	if after := s.Names("web", listen); !slices.Equal(after, before) {
		t.Fatalf("names %q, before the restart %q", after, before)
	}
	// What no app claims is closed once the defined apps are known.
	s.Adopt("gone", []Adopted{{Name: "cluster-tcp-0", Cluster: true, File: dup(t, cl)}})
	lost, _ := Listen(Addr{Network: TCP, Host: "127.0.0.1"}, Options{})
	lostAddr := lost.LocalAddr().String()
	s.Adopt("web", []Adopted{{Name: "tcp-127.0.0.1-1", File: dup(t, lost.File())}})
	lost.Close()
	s.AdoptionDone()
	s.Prune(map[string][]string{"web": listen})
	s.do(func() {
		if len(s.adopted) != 0 || s.cluster["gone"] != nil || s.cluster["web"] == nil {
			t.Errorf("after prune: adopted %v, cluster %v", s.adopted, s.cluster)
		}
	})
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
	s := testSet(t)
	listen := []string{"127.0.0.1:0"}
	if err := s.Ensure("web", listen); err != nil {
		t.Fatal(err)
	}
	var members []*os.File
	for slot := 2; slot >= 0; slot-- { // in any order
		files, _, err := s.Files("web", listen, slot)
		if err != nil {
			t.Fatal(err)
		}
		members = append([]*os.File{files[0]}, members...)
	}
	again, _, _ := s.Files("web", listen, 1)
	if again[0] != members[1] || ino(t, members[0]) == ino(t, members[1]) || ino(t, members[1]) == ino(t, members[2]) {
		t.Fatal("instances do not each have a socket of their own")
	}
	nonblock(t, members)
	addr := s.Names("web", listen)[0]
	for _, m := range members {
		if a, _ := FileAddr(m); a.String() != addr {
			t.Fatalf("a member is bound to %v, not %s", a, addr)
		}
	}
	s.Serving("web", []int{2, 0})
	s.sync()
	if got := landed(t, addr, 40, members); got[1] != 0 || got[0] < 8 || got[2] < 8 {
		t.Fatalf("with instances 0 and 2 serving, 40 connections landed %v", got)
	}
	s.Serving("web", []int{0})
	s.sync()
	if got := landed(t, addr, 10, members); got[0] != 10 {
		t.Fatalf("with instance 0 serving, 10 connections landed %v", got)
	}
	// The last one down: connections queue where they went last.
	s.Serving("web", nil)
	s.sync()
	if got := landed(t, addr, 5, members); got[0] != 5 {
		t.Fatalf("with no instance serving, 5 connections landed %v", got)
	}
	// Only the latest word counts.
	s.Serving("web", []int{2})
	s.Serving("web", []int{1})
	s.sync()
	if got := landed(t, addr, 5, members); got[1] != 5 {
		t.Fatalf("with instance 1 serving, 5 connections landed %v", got)
	}
	// Another app on the same address adds its serving slots.
	if err := s.Ensure("api", listen); err != nil {
		t.Fatal(err)
	}
	s.Serving("api", []int{2})
	s.sync()
	if got := landed(t, addr, 40, members); got[0] != 0 || got[1] < 8 || got[2] < 8 {
		t.Fatalf("with web:1 and api:2 serving, 40 connections landed %v", got)
	}
}

// A cluster-mode socket follows the serving slots too, whether the slots
// came before the socket was bound or after.
func TestClusterSocketsAreSteered(t *testing.T) {
	s := testSet(t)
	s.Serving("web", []int{1})
	var members []*os.File
	for slot := 0; slot < 2; slot++ {
		f, _, err := s.ListenFor("web", slot, TCPAddr("127.0.0.1", 0), false)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, f)
	}
	nonblock(t, members)
	addr := s.Names("web", nil)[0]
	if got := landed(t, addr, 10, members); got[1] != 10 {
		t.Fatalf("with instance 1 serving, 10 connections landed %v", got)
	}
	s.Serving("web", []int{0})
	s.sync()
	if got := landed(t, addr, 10, members); got[0] != 10 {
		t.Fatalf("with instance 0 serving, 10 connections landed %v", got)
	}
}

// A new daemon keeps steering by slot when the survivors hand back every
// member up to the last, and leaves the spreading to the kernel when one is
// missing (its position in the kernel's group is then unknown).
func TestAdoptedGroupsKeepTheirSlots(t *testing.T) {
	listen := []string{"127.0.0.1:0"}
	for _, gap := range []bool{false, true} {
		old := testSet(t)
		var members []*os.File
		for slot := 0; slot < 3; slot++ {
			files, _, err := old.Files("web", listen, slot)
			if err != nil {
				t.Fatal(err)
			}
			members = append(members, files[0])
		}
		addr := old.Names("web", listen)[0]
		ino1 := ino(t, members[1])
		s := testSet(t)
		for _, slot := range []int{2, 0, 1} {
			if gap && slot == 1 {
				continue
			}
			s.Adopt("web", []Adopted{{Name: "tcp-127.0.0.1-0", Slot: slot, File: dup(t, members[slot])}})
		}
		var copies []*os.File
		for slot := 0; slot < 3; slot++ {
			if gap && slot == 1 {
				old.do(func() { old.byAddr[Addr{Network: TCP, Host: "127.0.0.1"}.String()].members[1].close() })
				continue
			}
			copies = append(copies, dup(t, members[slot]))
		}
		old.Close()
		s.AdoptionDone()
		if err := s.Ensure("web", listen); err != nil {
			t.Fatal(err)
		}
		files, _, err := s.Files("web", listen, 1)
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
		s.Serving("web", []int{2})
		s.sync()
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
		s.Close()
	}
}

// A closed Set refuses calls instead of hanging, and closes what it is
// handed.
func TestClosedSetRefuses(t *testing.T) {
	s := NewSet(nil)
	s.Close()
	s.Close()
	if err := s.Ensure("web", []string{"127.0.0.1:0"}); !errors.Is(err, ErrSetClosed) {
		t.Fatalf("Ensure after Close: %v", err)
	}
	if _, _, err := s.Files("web", []string{"127.0.0.1:0"}, 0); !errors.Is(err, ErrSetClosed) {
		t.Fatalf("Files after Close: %v", err)
	}
	if _, _, err := s.ListenFor("web", 0, TCPAddr("127.0.0.1", 0), false); !errors.Is(err, ErrSetClosed) {
		t.Fatalf("ListenFor after Close: %v", err)
	}
	r, w, _ := os.Pipe()
	defer w.Close()
	s.Adopt("web", []Adopted{{Name: "tcp-9", File: r}})
	if _, err := r.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("a file adopted after Close is not closed: %v", err)
	}
	s.Serving("web", []int{0}) // never waits
}
