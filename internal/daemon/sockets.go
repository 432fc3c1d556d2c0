package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/keeper"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

// socketSet holds the listening sockets keel owns, each opened once and
// shared by all of an app's instances across restarts and reloads, so
// that while the app exists its port never refuses a connection:
//
//   - the sockets of every app's `listen`, inherited as fds 3, 4, …;
//   - the sockets bound for Node apps in cluster mode, one per app and
//     address the app listens on (listenFor), handed out through the
//     keepers.
//
// A daemon that starts while instances of an earlier one survive takes
// their sockets back (adopt) instead of binding the ports again: binding
// would fail (the survivors hold the address), and a second socket would
// split the connections between old and new instances.
type socketSet struct {
	log *slog.Logger

	mu sync.Mutex // guards the maps; the spawner asks from its own goroutines
	// byAddr: `listen` sockets by canonical address (sockets.Addr.String).
	byAddr map[string]*ownedSocket
	// cluster: sockets bound for cluster mode, by app, then by name.
	cluster map[string]map[string]*ownedSocket
	// adopted: `listen` sockets handed back by surviving keepers, by their
	// LISTEN_FDNAMES name, until an app's `listen` claims them.
	adopted map[string]*ownedSocket
}

// ownedSocket is one listening socket: opened here (ln) or adopted.
type ownedSocket struct {
	ln    *sockets.Listener // nil for an adopted socket
	file  *os.File
	name  string
	local net.Addr
}

func (o *ownedSocket) close() {
	if o.ln != nil {
		// Removes a unix socket's file too.
		o.ln.Close()
		return
	}
	o.file.Close()
}

func opened(ln *sockets.Listener, name string) *ownedSocket {
	return &ownedSocket{ln: ln, file: ln.File(), name: name, local: ln.LocalAddr()}
}

func newSocketSet(log *slog.Logger) *socketSet {
	return &socketSet{
		log:     log,
		byAddr:  map[string]*ownedSocket{},
		cluster: map[string]map[string]*ownedSocket{},
		adopted: map[string]*ownedSocket{},
	}
}

// ensure opens the app's listen sockets that are not open yet, taking an
// adopted socket of the same name rather than binding. An address that
// does not parse or cannot be bound is an error naming it, and leaves the
// set as it was.
func (s *socketSet) ensure(a *spec.App) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ensureLocked(a)
}

func (s *socketSet) ensureLocked(a *spec.App) error {
	var added []string
	undo := func() {
		for _, k := range added {
			o := s.byAddr[k]
			delete(s.byAddr, k)
			if o.ln == nil {
				s.adopted[o.name] = o // back where it came from
			} else {
				o.close()
			}
		}
	}
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			undo()
			return fmt.Errorf("listen %q: %w", l, err)
		}
		key := addr.String()
		if _, ok := s.byAddr[key]; ok {
			continue
		}
		if o, ok := s.adopted[addr.Name()]; ok {
			delete(s.adopted, addr.Name())
			s.byAddr[key] = o
			added = append(added, key)
			s.log.Info("listening on an adopted socket", "app", a.Name, "addr", o.local.String())
			continue
		}
		ln, err := sockets.Listen(addr, sockets.Options{})
		if err != nil {
			undo()
			return fmt.Errorf("listen %q: %w", l, err)
		}
		s.byAddr[key] = opened(ln, addr.Name())
		added = append(added, key)
		s.log.Info("listening", "app", a.Name, "addr", ln.LocalAddr().String())
	}
	return nil
}

// files returns the app's sockets in `listen` order with their
// LISTEN_FDNAMES names, for the keeper to pass on as fds 3, 4, …. A socket
// not open yet is opened now (the supervisor may restore an instance
// before the daemon got to ensure).
func (s *socketSet) files(a *spec.App) ([]*os.File, []string, error) {
	if len(a.Listen) == 0 {
		return nil, nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ensureLocked(a); err != nil {
		return nil, nil, err
	}
	var files []*os.File
	var names []string
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			return nil, nil, fmt.Errorf("listen %q: %w", l, err)
		}
		o := s.byAddr[addr.String()]
		files = append(files, o.file)
		names = append(names, addr.Name())
	}
	return files, names, nil
}

// clusterName names a cluster-mode socket: stable across daemon restarts,
// and distinct from every LISTEN_FDNAMES name.
func clusterName(addr sockets.Addr, ipv6Only bool) string {
	n := "cluster-" + addr.Name()
	if ipv6Only {
		n += "-v6only"
	}
	return n
}

// listenFor is keeper.SpawnerConfig.ListenFor: the socket app's instances
// share for a listen on req's host and port, bound on the first request
// (port 0: a free port, then shared like any other) and kept until the app
// is deleted.
func (s *socketSet) listenFor(app string, req keeper.ListenRequest) (*os.File, string, error) {
	addr := sockets.TCPAddr(req.Host, req.Port)
	name := clusterName(addr, req.IPv6Only)
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.cluster[app][name]; o != nil {
		return o.file, name, nil
	}
	ln, err := sockets.Listen(addr, sockets.Options{IPv6Only: req.IPv6Only})
	if err != nil {
		return nil, "", err
	}
	if s.cluster[app] == nil {
		s.cluster[app] = map[string]*ownedSocket{}
	}
	s.cluster[app][name] = opened(ln, name)
	s.log.Info("listening for a cluster-mode app", "app", app, "addr", ln.LocalAddr().String(), "name", name)
	return ln.File(), name, nil
}

// adopt is keeper.SpawnerConfig.AdoptSockets: it keeps the sockets a
// surviving keeper of app holds, unless it has one of that name already
// (the same socket, from another instance), in which case it closes the
// copy. It owns the files.
func (s *socketSet) adopt(app string, socks []keeper.Socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sk := range socks {
		local, err := listeningAddr(sk.File)
		if err != nil {
			s.log.Warn("a keeper handed back a socket that is not listening", "app", app, "name", sk.Name, "err", err)
			sk.File.Close()
			continue
		}
		o := &ownedSocket{file: sk.File, name: sk.Name, local: local}
		switch sk.Kind {
		case keeper.SocketCluster:
			if s.cluster[app][sk.Name] != nil {
				sk.File.Close()
				continue
			}
			if s.cluster[app] == nil {
				s.cluster[app] = map[string]*ownedSocket{}
			}
			s.cluster[app][sk.Name] = o
		case keeper.SocketListen:
			if s.adopted[sk.Name] != nil || slices.ContainsFunc(mapValues(s.byAddr), func(b *ownedSocket) bool { return b.name == sk.Name }) {
				sk.File.Close()
				continue
			}
			s.adopted[sk.Name] = o
		default:
			s.log.Warn("a keeper handed back a socket of an unknown kind", "app", app, "name", sk.Name, "kind", sk.Kind)
			sk.File.Close()
			continue
		}
		s.log.Info("adopted a socket from a surviving instance", "app", app, "name", sk.Name, "addr", local.String())
	}
}

func mapValues(m map[string]*ownedSocket) []*ownedSocket {
	out := make([]*ownedSocket, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// listeningAddr is the address f is bound to, if f is a listening socket.
func listeningAddr(f *os.File) (net.Addr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var accepting int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		accepting, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("getsockopt SO_ACCEPTCONN", serr)
	}
	if accepting != 1 {
		return nil, fmt.Errorf("%s does not listen", f.Name())
	}
	return sockets.FileAddr(f)
}

// names lists the app's sockets as bound (e.g. "127.0.0.1:3000"): its
// `listen` sockets in order, then those bound for it in cluster mode.
func (s *socketSet) names(a *spec.App) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			continue
		}
		if o, ok := s.byAddr[addr.String()]; ok {
			out = append(out, o.local.String())
		}
	}
	cl := mapValues(s.cluster[a.Name])
	slices.SortFunc(cl, func(x, y *ownedSocket) int {
		switch {
		case x.name < y.name:
			return -1
		case x.name > y.name:
			return 1
		}
		return 0
	})
	for _, o := range cl {
		out = append(out, o.local.String())
	}
	return out
}

// prune closes the sockets that no defined app needs any more: `listen`
// sockets no app names, cluster-mode sockets of apps that are gone, and
// adopted sockets no app claimed.
func (s *socketSet) prune(apps []*spec.App) {
	used := map[string]bool{}
	defined := map[string]bool{}
	for _, a := range apps {
		defined[a.Name] = true
		for _, l := range a.Listen {
			if addr, err := sockets.Parse(l); err == nil {
				used[addr.String()] = true
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, o := range s.byAddr {
		if !used[k] {
			o.close()
			delete(s.byAddr, k)
		}
	}
	for app, byName := range s.cluster {
		if defined[app] {
			continue
		}
		for _, o := range byName {
			o.close()
		}
		delete(s.cluster, app)
		s.log.Info("closed the cluster-mode sockets of a deleted app", "app", app)
	}
	for name, o := range s.adopted {
		o.close()
		delete(s.adopted, name)
		s.log.Info("closed an adopted socket no app claims", "name", name)
	}
}

func (s *socketSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, o := range s.byAddr {
		o.close()
		delete(s.byAddr, k)
	}
	for app, byName := range s.cluster {
		for _, o := range byName {
			o.close()
		}
		delete(s.cluster, app)
	}
	for name, o := range s.adopted {
		o.close()
		delete(s.adopted, name)
	}
}
