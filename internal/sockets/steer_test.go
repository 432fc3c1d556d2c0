package sockets

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// queued counts the connections waiting in each member's accept queue,
// accepting (and closing) them.
func queued(t *testing.T, group []*Listener) []int {
	t.Helper()
	counts := make([]int, len(group))
	for i, l := range group {
		rc, err := l.File().SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
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

func dialN(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

func nonblocking(t *testing.T, group []*Listener) {
	for _, l := range group {
		rc, _ := l.File().SyscallConn()
		rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), true) })
	}
}

func TestSteerSpreadsABurstOverTheChosenMembers(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		a, err := Parse(net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		group, err := ListenGroup(a, 3, Options{})
		if err != nil {
			t.Skipf("no %s: %v", host, err)
		}
		defer func() {
			for _, l := range group {
				l.Close()
			}
		}()
		nonblocking(t, group)
		addr := group[0].LocalAddr().String()
		if err := Steer(group[1].File(), []int{0, 2}); err != nil {
			t.Fatal(err)
		}
		dialN(t, addr, 40)
		got := queued(t, group)
		if got[1] != 0 || got[0]+got[2] != 40 || got[0] < 8 || got[2] < 8 {
			t.Fatalf("%s: 40 connections steered to members 0 and 2 landed %v", host, got)
		}
		if err := Steer(group[0].File(), []int{1}); err != nil {
			t.Fatal(err)
		}
		dialN(t, addr, 10)
		if got := queued(t, group); got[1] != 10 {
			t.Fatalf("%s: 10 connections steered to member 1 landed %v", host, got)
		}
		if err := Steer(group[0].File(), nil); err != nil {
			t.Fatal(err)
		}
		dialN(t, addr, 60)
		if got := queued(t, group); got[0] == 0 || got[1] == 0 || got[2] == 0 {
			t.Fatalf("%s: unsteered, 60 connections landed %v", host, got)
		}
	}
}
