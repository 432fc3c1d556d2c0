package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

// socketSet holds the listening sockets of every app's `listen`, opened
// once and shared by all the app's instances across restarts and reloads:
// while the app exists, its port never refuses a connection.
type socketSet struct {
	log *slog.Logger

	mu     sync.Mutex // guards byAddr; the spawner asks from its own goroutines
	byAddr map[string]*sockets.Listener
}

func newSocketSet(log *slog.Logger) *socketSet {
	return &socketSet{log: log, byAddr: map[string]*sockets.Listener{}}
}

// ensure opens the app's listen sockets that are not open yet. An address
// that does not parse or cannot be bound is an error naming it.
func (s *socketSet) ensure(a *spec.App) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var opened []string
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			s.closeLocked(opened)
			return fmt.Errorf("listen %q: %w", l, err)
		}
		key := addr.String()
		if _, ok := s.byAddr[key]; ok {
			continue
		}
		ln, err := sockets.Listen(addr, sockets.Options{})
		if err != nil {
			s.closeLocked(opened)
			return fmt.Errorf("listen %q: %w", l, err)
		}
		s.byAddr[key] = ln
		opened = append(opened, key)
		s.log.Info("listening", "app", a.Name, "addr", ln.LocalAddr().String())
	}
	return nil
}

func (s *socketSet) closeLocked(keys []string) {
	for _, k := range keys {
		if ln, ok := s.byAddr[k]; ok {
			ln.Close()
			delete(s.byAddr, k)
		}
	}
}

// files returns the app's sockets in `listen` order with their
// LISTEN_FDNAMES names, for the keeper to pass on as fds 3, 4, ….
func (s *socketSet) files(a *spec.App) ([]*os.File, []string, error) {
	if len(a.Listen) == 0 {
		return nil, nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var files []*os.File
	var names []string
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			return nil, nil, fmt.Errorf("listen %q: %w", l, err)
		}
		ln, ok := s.byAddr[addr.String()]
		if !ok {
			return nil, nil, fmt.Errorf("listen %q: the socket is not open", l)
		}
		files = append(files, ln.File())
		names = append(names, ln.Name())
	}
	return files, names, nil
}

// names lists the app's sockets as bound (e.g. "127.0.0.1:3000").
func (s *socketSet) names(a *spec.App) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			continue
		}
		if ln, ok := s.byAddr[addr.String()]; ok {
			out = append(out, ln.LocalAddr().String())
		}
	}
	return out
}

// prune closes sockets that no defined app names any more.
func (s *socketSet) prune(apps []*spec.App) {
	used := map[string]bool{}
	for _, a := range apps {
		for _, l := range a.Listen {
			if addr, err := sockets.Parse(l); err == nil {
				used[addr.String()] = true
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, ln := range s.byAddr {
		if !used[k] {
			ln.Close()
			delete(s.byAddr, k)
		}
	}
}

func (s *socketSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, ln := range s.byAddr {
		ln.Close()
		delete(s.byAddr, k)
	}
}
