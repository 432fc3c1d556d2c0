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

// socketSet holds the listening sockets keel owns, opened once per address
// and kept open across restarts and reloads, so that while the app exists
// its port never refuses a connection:
//
//   - the sockets of every app's `listen`, inherited as fds 3, 4, …;
//   - the sockets bound for Node apps in cluster mode, one per app and
//     address the app listens on (listenFor), handed out through the
//     keepers.
//
// A TCP address is a group of SO_REUSEPORT sockets, one member per
// instance slot: instance N accepts on member N, and the kernel spreads new
// connections over the members. One socket shared by every instance would
// let whichever instance is awake take a whole burst of connections
// (bench/README.md has the measurements). The set steers new connections
// (sockets.Steer) to the members whose instance is serving, so a dead or
// stopping instance gets none; connections already queued on its member
// wait there for the instance's replacement, which accepts on the same
// member, as does the new instance of a reload. Members are never closed
// one by one, only with their whole group, which keeps member N at
// position N in the kernel's group. A unix socket is one socket shared by
// every instance.
//
// A daemon that starts while instances of an earlier one survive takes
// their sockets back (adopt) instead of binding the ports again.
type socketSet struct {
	log *slog.Logger

	mu sync.Mutex // guards the fields; the spawner calls from its own goroutines
	// byAddr: `listen` groups by canonical address (sockets.Addr.String).
	byAddr map[string]*group
	// cluster: groups bound for cluster mode, by app, then by name.
	cluster map[string]map[string]*group
	// adopted: `listen` groups made of sockets handed back by surviving
	// keepers, by their LISTEN_FDNAMES name, until an app's `listen`
	// claims them.
	adopted map[string]*group
	// serving counts the processes taking connections, by app and slot.
	serving map[string]map[int]int
}

// group is one address's sockets.
type group struct {
	name    string
	addr    sockets.Addr
	opts    sockets.Options
	members []*ownedSocket // by slot; nil where none was opened
	// reuse: the sockets are an SO_REUSEPORT group (members[0] is shared
	// by every slot otherwise).
	reuse bool
	// ordered: member N is at position N in the kernel's group, so Steer
	// can name it. Not so after an adoption that found gaps (the kernel
	// moved the last member into each gap).
	ordered bool
	// settled: the group is ready for use; adopted sockets are gathered
	// first, until the adoption is over.
	settled bool
	// apps using the group, whose serving slots steer it.
	apps map[string]bool
	// steered is the slots connections go to, as last set; nil: the
	// kernel's own hash.
	steered []int
}

// ownedSocket is one listening socket: opened here (ln) or adopted.
type ownedSocket struct {
	ln    *sockets.Listener // nil for an adopted socket
	file  *os.File
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

func opened(ln *sockets.Listener) *ownedSocket {
	return &ownedSocket{ln: ln, file: ln.File(), local: ln.LocalAddr()}
}

func newSocketSet(log *slog.Logger) *socketSet {
	return &socketSet{
		log:     log,
		byAddr:  map[string]*group{},
		cluster: map[string]map[string]*group{},
		adopted: map[string]*group{},
		serving: map[string]map[int]int{},
	}
}

// openGroup binds a's first socket. The bind fails if anything else has
// the address, another SO_REUSEPORT group included.
func openGroup(name string, a sockets.Addr, o sockets.Options) (*group, error) {
	g := &group{name: name, addr: a, opts: o, apps: map[string]bool{}, ordered: true, settled: true}
	if a.Network == sockets.TCP {
		o.Groupable, g.reuse = true, true
	}
	ln, err := sockets.Listen(a, o)
	if err != nil {
		return nil, err
	}
	g.members = []*ownedSocket{opened(ln)}
	return g, nil
}

func (g *group) first() *ownedSocket {
	for _, m := range g.members {
		if m != nil {
			return m
		}
	}
	return nil
}

// member is slot's socket, opened now if need be. Missing members below
// slot are opened first, in order, so that each takes its slot's position
// in the kernel's group.
func (g *group) member(slot int) (*ownedSocket, error) {
	if !g.reuse {
		return g.first(), nil
	}
	for len(g.members) <= slot {
		g.members = append(g.members, nil)
	}
	if g.members[slot] != nil {
		return g.members[slot], nil
	}
	for i := 0; i <= slot; i++ {
		if g.members[i] != nil {
			continue
		}
		ln, err := sockets.Join(g.first().file, g.addr, g.opts)
		if err != nil {
			return nil, fmt.Errorf("socket for instance %d: %w", i, err)
		}
		g.members[i] = opened(ln)
	}
	return g.members[slot], nil
}

func (g *group) close() {
	for _, m := range g.members {
		if m != nil {
			m.close()
		}
	}
	g.members = nil
}

// settle decides, for a group made of adopted sockets, whether its
// members can be told apart by position: only if they are the slots
// 0…N-1 without a gap.
func (g *group) settle() {
	g.settled = true
	if t, ok := g.first().local.(*net.TCPAddr); ok {
		g.opts.IPv6Only = t.IP.To4() == nil && v6only(g.first().file)
	}
	g.reuse = sockets.ReusesPort(g.first().file)
	if !g.reuse {
		// From a keel that shared one socket: every copy is that socket.
		keep := g.first()
		for _, m := range g.members {
			if m != nil && m != keep {
				m.close()
			}
		}
		g.members = []*ownedSocket{keep}
		return
	}
	g.ordered = !slices.Contains(g.members, nil)
}

// steer points new connections at the slots whose instance serves. When
// none does (a restart, a crash of the last one), it leaves them as they
// were: they queue on members whose instances come back.
func (s *socketSet) steer(g *group) {
	if !g.settled || !g.reuse {
		return
	}
	var slots []int
	if g.ordered {
		for slot, m := range g.members {
			if m == nil {
				continue
			}
			for app := range g.apps {
				if s.serving[app][slot] > 0 {
					slots = append(slots, slot)
					break
				}
			}
		}
		if len(slots) == 0 {
			return
		}
	}
	if slices.Equal(slots, g.steered) && (slots != nil) == (g.steered != nil) {
		return
	}
	if err := sockets.Steer(g.first().file, slots); err != nil {
		s.log.Warn("steering connections", "socket", g.name, "slots", slots, "err", err)
		return
	}
	g.steered = slots
}

// servingChanged is keeper.SpawnerConfig.Serving.
func (s *socketSet) servingChanged(app string, slot int, up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving[app] == nil {
		s.serving[app] = map[int]int{}
	}
	if up {
		s.serving[app][slot]++
	} else if s.serving[app][slot] > 0 {
		s.serving[app][slot]--
	}
	if s.serving[app][slot] == 0 {
		delete(s.serving[app], slot)
	}
	for _, g := range s.groupsOf(app) {
		s.steer(g)
	}
}

func (s *socketSet) groupsOf(app string) []*group {
	var out []*group
	for _, g := range s.byAddr {
		if g.apps[app] {
			out = append(out, g)
		}
	}
	for _, g := range s.cluster[app] {
		out = append(out, g)
	}
	return out
}

// ensure opens the app's listen sockets that are not open yet, taking an
// adopted group of the same name rather than binding. An address that does
// not parse or cannot be bound is an error naming it, and leaves the set
// as it was.
func (s *socketSet) ensure(a *spec.App) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ensureLocked(a)
}

func (s *socketSet) ensureLocked(a *spec.App) error {
	var added []string
	undo := func() {
		for _, k := range added {
			g := s.byAddr[k]
			delete(s.byAddr, k)
			g.close()
		}
	}
	for _, l := range a.Listen {
		addr, err := sockets.Parse(l)
		if err != nil {
			undo()
			return fmt.Errorf("listen %q: %w", l, err)
		}
		key := addr.String()
		if g, ok := s.byAddr[key]; ok {
			if !g.apps[a.Name] {
				g.apps[a.Name] = true
				s.steer(g)
			}
			continue
		}
		if g, ok := s.adopted[addr.Name()]; ok {
			delete(s.adopted, addr.Name())
			g.addr = addr
			if !g.settled {
				g.settle()
			}
			g.apps[a.Name] = true
			s.byAddr[key] = g
			s.steer(g)
			s.log.Info("listening on adopted sockets", "app", a.Name, "addr", g.first().local.String(), "ordered", g.ordered)
			continue
		}
		g, err := openGroup(addr.Name(), addr, sockets.Options{})
		if err != nil {
			undo()
			return fmt.Errorf("listen %q: %w", l, err)
		}
		g.apps[a.Name] = true
		s.byAddr[key] = g
		added = append(added, key)
		s.log.Info("listening", "app", a.Name, "addr", g.first().local.String())
	}
	return nil
}

// files returns the sockets of the app's instance slot in `listen` order
// with their LISTEN_FDNAMES names, for the keeper to pass on as fds 3, 4,
// …. A socket not open yet is opened now (the supervisor may restore an
// instance before the daemon got to ensure).
func (s *socketSet) files(a *spec.App, slot int) ([]*os.File, []string, error) {
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
		g := s.byAddr[addr.String()]
		m, err := g.member(slot)
		if err != nil {
			return nil, nil, fmt.Errorf("listen %q: %w", l, err)
		}
		files = append(files, m.file)
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

// listenFor is keeper.SpawnerConfig.ListenFor: the socket of the app's
// instance slot for a listen on req's host and port. The address is bound
// on the first request (port 0: a free port, then shared like any other)
// and kept until the app is deleted.
func (s *socketSet) listenFor(app string, slot int, req keeper.ListenRequest) (*os.File, string, error) {
	addr := sockets.TCPAddr(req.Host, req.Port)
	name := clusterName(addr, req.IPv6Only)
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.cluster[app][name]
	if g == nil {
		var err error
		if g, err = openGroup(name, addr, sockets.Options{IPv6Only: req.IPv6Only}); err != nil {
			return nil, "", err
		}
		g.apps[app] = true
		if s.cluster[app] == nil {
			s.cluster[app] = map[string]*group{}
		}
		s.cluster[app][name] = g
		s.log.Info("listening for a cluster-mode app", "app", app, "addr", g.first().local.String(), "name", name)
	}
	m, err := g.member(slot)
	if err != nil {
		return nil, "", err
	}
	s.steer(g)
	return m.file, name, nil
}

// adopt is keeper.SpawnerConfig.AdoptSockets: it keeps the sockets a
// surviving keeper of app holds, as its slot's member of their group,
// unless it has that member already (the same socket, from the other
// process of a reload), in which case it closes the copy. It owns the
// files.
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
		var g *group
		switch sk.Kind {
		case keeper.SocketCluster:
			if s.cluster[app] == nil {
				s.cluster[app] = map[string]*group{}
			}
			if g = s.cluster[app][sk.Name]; g == nil {
				g = &group{name: sk.Name, apps: map[string]bool{app: true}}
				s.cluster[app][sk.Name] = g
			}
		case keeper.SocketListen:
			if slices.ContainsFunc(mapValues(s.byAddr), func(b *group) bool { return b.name == sk.Name }) {
				sk.File.Close() // claimed already
				continue
			}
			if g = s.adopted[sk.Name]; g == nil {
				g = &group{name: sk.Name, apps: map[string]bool{}}
				s.adopted[sk.Name] = g
			}
		default:
			s.log.Warn("a keeper handed back a socket of an unknown kind", "app", app, "name", sk.Name, "kind", sk.Kind)
			sk.File.Close()
			continue
		}
		for len(g.members) <= sk.Slot {
			g.members = append(g.members, nil)
		}
		if g.members[sk.Slot] != nil {
			sk.File.Close()
			continue
		}
		g.members[sk.Slot] = &ownedSocket{file: sk.File, local: local}
		s.log.Info("adopted a socket from a surviving instance", "app", app, "name", sk.Name, "slot", sk.Slot, "addr", local.String())
	}
}

// adoptionDone is keeper.SpawnerConfig.AdoptionDone: the groups of
// adopted sockets settle, and are steered to the surviving instances that
// serve.
func (s *socketSet) adoptionDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.adopted {
		if !g.settled {
			g.settle()
		}
	}
	for _, byName := range s.cluster {
		for _, g := range byName {
			if !g.settled {
				if t, ok := g.first().local.(*net.TCPAddr); ok {
					g.addr = sockets.TCPAddr(t.IP.String(), t.Port)
				}
				g.settle()
			}
			s.steer(g)
		}
	}
	for _, g := range s.byAddr {
		s.steer(g)
	}
}

func v6only(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	v := 0
	rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) })
	return v == 1
}

func mapValues(m map[string]*group) []*group {
	out := make([]*group, 0, len(m))
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
		if g, ok := s.byAddr[addr.String()]; ok {
			out = append(out, g.first().local.String())
		}
	}
	cl := mapValues(s.cluster[a.Name])
	slices.SortFunc(cl, func(x, y *group) int {
		switch {
		case x.name < y.name:
			return -1
		case x.name > y.name:
			return 1
		}
		return 0
	})
	for _, g := range cl {
		out = append(out, g.first().local.String())
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
	for k, g := range s.byAddr {
		if !used[k] {
			g.close()
			delete(s.byAddr, k)
			continue
		}
		for app := range g.apps {
			if !defined[app] {
				delete(g.apps, app)
			}
		}
	}
	for app, byName := range s.cluster {
		if defined[app] {
			continue
		}
		for _, g := range byName {
			g.close()
		}
		delete(s.cluster, app)
		s.log.Info("closed the cluster-mode sockets of a deleted app", "app", app)
	}
	for name, g := range s.adopted {
		g.close()
		delete(s.adopted, name)
		s.log.Info("closed an adopted socket no app claims", "name", name)
	}
	for app := range s.serving {
		if !defined[app] {
			delete(s.serving, app)
		}
	}
}

func (s *socketSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, g := range s.byAddr {
		g.close()
		delete(s.byAddr, k)
	}
	for app, byName := range s.cluster {
		for _, g := range byName {
			g.close()
		}
		delete(s.cluster, app)
	}
	for name, g := range s.adopted {
		g.close()
		delete(s.adopted, name)
	}
}
