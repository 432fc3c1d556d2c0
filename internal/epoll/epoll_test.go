package epoll

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A ready descriptor comes back under its token, a Wake as woken, and a
// removed descriptor no more.
func TestSetReadyWakeRemove(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fd := int(r.Fd())
	if err := s.Add(fd, 7); err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 8)
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ready, woken, err := s.Wait(events, nil)
	if err != nil || woken || len(ready) != 1 || ready[0] != 7 {
		t.Fatalf("Wait = %v, %v, %v; want [7], not woken", ready, woken, err)
	}
	s.Remove(fd)
	s.Wake()
	ready, woken, err = s.Wait(events, ready)
	if err != nil || !woken || len(ready) != 0 {
		t.Fatalf("Wait = %v, %v, %v; want woken only (the pipe was removed)", ready, woken, err)
	}
}
