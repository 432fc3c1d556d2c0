package sockets

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrSetClosed is returned by the calls made to a Set after Close.
var ErrSetClosed = errors.New("the socket set is closed")

// Set holds the listening sockets keel owns, opened once per address and
// kept open across restarts and reloads, so that while an app exists its
// port never refuses a connection (see the package documentation, "The
// set"). One goroutine owns everything in it; the methods hand that
// goroutine a command and wait for it, so they are safe to call from any
// goroutine — except Serving, which only leaves a note and never waits.
type Set struct {
	log  *slog.Logger
	cmds chan func()
	quit chan struct{}
	done chan struct{}
	once sync.Once

	// pendMu guards pend, the serving slots published (Serving) and not
	// applied yet, by app: the latest word of each app wins.
	pendMu sync.Mutex
	pend   map[string][]int
	wake   chan struct{} // a note waits in pend (capacity 1)

	// Owned by the goroutine of run.
	//
	// byAddr: `listen` groups by canonical address (Addr.String).
	byAddr map[string]*group
	// cluster: groups bound for cluster mode, by app, then by name.
	cluster map[string]map[string]*group
	// adopted: `listen` groups made of sockets handed back by surviving
	// instances, by their LISTEN_FDNAMES name, until an app's `listen`
	// claims them.
	adopted map[string]*group
	// serving: the slots of each app whose instance takes connections,
	// as last published.
	serving map[string][]int
}

// Adopted is a listening socket a surviving instance handed back to a
// new daemon.
type Adopted struct {
	// Name is the socket's LISTEN_FDNAMES name (a `listen` socket), or
	// the name ListenFor gave it (Cluster).
	Name string
	// Cluster marks a socket ListenFor bound for a cluster-mode app.
	Cluster bool
	// Slot is the instance that held it.
	Slot int
	// File is the socket; the Set owns it from Adopt on.
	File *os.File
}

// group is one address's sockets.
type group struct {
	name    string
	addr    Addr
	opts    Options
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
	ln    *Listener // nil for an adopted socket
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

func opened(ln *Listener) *ownedSocket {
	return &ownedSocket{ln: ln, file: ln.File(), local: ln.LocalAddr()}
}

// NewSet returns an empty Set and starts its goroutine; Close ends it.
func NewSet(log *slog.Logger) *Set {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Set{
		log:     log,
		cmds:    make(chan func()),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		pend:    map[string][]int{},
		wake:    make(chan struct{}, 1),
		byAddr:  map[string]*group{},
		cluster: map[string]map[string]*group{},
		adopted: map[string]*group{},
		serving: map[string][]int{},
	}
	go s.run()
	return s
}

func (s *Set) run() {
	defer close(s.done)
	for {
		select {
		case f := <-s.cmds:
			// What was published before the command was given is in
			// force when it runs.
			s.applyServing()
			f()
		case <-s.wake:
			s.applyServing()
		case <-s.quit:
			s.closeAll()
			return
		}
	}
}

// do runs f on the Set's goroutine and waits for it; false if the Set is
// closed.
func (s *Set) do(f func()) bool {
	ran := make(chan struct{})
	select {
	case s.cmds <- func() { f(); close(ran) }:
		<-ran
		return true
	case <-s.done:
		return false
	}
}

// Close closes every socket of the set (processes that inherited them
// keep their copies) and ends its goroutine. Later calls do nothing, or
// return ErrSetClosed.
func (s *Set) Close() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// Serving publishes the slots of app whose instances take connections
// now — ready, and neither stopping nor crashing nor draining — in place
// of what it published before; none (nil or empty) once none does or the
// app is gone. New connections to the app's sockets are steered to those
// slots' members. It never waits: the Set applies the latest word of each
// app in its own time, and before any command given after Serving
// returned. The Set does not keep slots.
func (s *Set) Serving(app string, slots []int) {
	slots = slices.Clone(slots)
	slices.Sort(slots)
	slots = slices.Compact(slots)
	s.pendMu.Lock()
	s.pend[app] = slots
	s.pendMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// applyServing takes in what Serving published and steers the groups of
// each app it names.
func (s *Set) applyServing() {
	s.pendMu.Lock()
	pend := s.pend
	if len(pend) == 0 {
		s.pendMu.Unlock()
		return
	}
	s.pend = map[string][]int{}
	s.pendMu.Unlock()
	for app, slots := range pend {
		if slices.Equal(s.serving[app], slots) {
			continue
		}
		if len(slots) == 0 {
			delete(s.serving, app)
		} else {
			s.serving[app] = slots
		}
		for _, g := range s.groupsOf(app) {
			s.steer(g)
		}
	}
}

// openGroup binds a's first socket. The bind fails if anything else has
// the address, another SO_REUSEPORT group included.
func openGroup(name string, a Addr, o Options) (*group, error) {
	g := &group{name: name, addr: a, opts: o, apps: map[string]bool{}, ordered: true, settled: true}
	if a.Network == TCP {
		o.Groupable, g.reuse = true, true
	}
	ln, err := Listen(a, o)
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
		ln, err := Join(g.first().file, g.addr, g.opts)
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
	g.reuse = ReusesPort(g.first().file)
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
func (s *Set) steer(g *group) {
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
				if _, ok := slices.BinarySearch(s.serving[app], slot); ok {
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
	if err := Steer(g.first().file, slots); err != nil {
		s.log.Warn("steering connections", "socket", g.name, "slots", slots, "err", err)
		return
	}
	g.steered = slots
}

func (s *Set) groupsOf(app string) []*group {
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

// Ensure opens app's `listen` sockets that are not open yet, taking an
// adopted group of the same name rather than binding. An address that
// does not parse or cannot be bound is an error naming it, and leaves the
// set as it was.
func (s *Set) Ensure(app string, listen []string) error {
	err := ErrSetClosed
	s.do(func() { err = s.ensure(app, listen) })
	return err
}

func (s *Set) ensure(app string, listen []string) error {
	var added []string
	undo := func() {
		for _, k := range added {
			g := s.byAddr[k]
			delete(s.byAddr, k)
			g.close()
		}
	}
	for _, l := range listen {
		addr, err := Parse(l)
		if err != nil {
			undo()
			return fmt.Errorf("listen %q: %w", l, err)
		}
		key := addr.String()
		if g, ok := s.byAddr[key]; ok {
			if !g.apps[app] {
				g.apps[app] = true
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
			g.apps[app] = true
			s.byAddr[key] = g
			s.steer(g)
			s.log.Info("listening on adopted sockets", "app", app, "addr", g.first().local.String(), "ordered", g.ordered)
			continue
		}
		g, err := openGroup(addr.Name(), addr, Options{})
		if err != nil {
			undo()
			return fmt.Errorf("listen %q: %w", l, err)
		}
		g.apps[app] = true
		s.byAddr[key] = g
		added = append(added, key)
		s.log.Info("listening", "app", app, "addr", g.first().local.String())
	}
	return nil
}

// Files returns the sockets of app's instance slot for its `listen`, in
// that order, with their LISTEN_FDNAMES names, for the instance to
// inherit as fds 3, 4, …. A socket not open yet is opened now (an
// instance may be restored before Ensure). The files stay the Set's.
func (s *Set) Files(app string, listen []string, slot int) ([]*os.File, []string, error) {
	if len(listen) == 0 {
		return nil, nil, nil
	}
	var files []*os.File
	var names []string
	err := ErrSetClosed
	s.do(func() { files, names, err = s.files(app, listen, slot) })
	return files, names, err
}

func (s *Set) files(app string, listen []string, slot int) ([]*os.File, []string, error) {
	if err := s.ensure(app, listen); err != nil {
		return nil, nil, err
	}
	var files []*os.File
	var names []string
	for _, l := range listen {
		addr, err := Parse(l)
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

// ClusterName names a cluster-mode socket: stable across daemon restarts,
// and distinct from every LISTEN_FDNAMES name.
func ClusterName(addr Addr, ipv6Only bool) string {
	n := "cluster-" + addr.Name()
	if ipv6Only {
		n += "-v6only"
	}
	return n
}

// ListenFor returns the socket of app's instance slot for a cluster-mode
// listen on addr (a Node app's server.listen(port) with no `listen`), and
// its name (ClusterName). The address is bound on the first request (port
// 0: a free port, then shared like any other) and kept until Prune drops
// the app. The file stays the Set's. A failed bind is an error that wraps
// the syscall.Errno.
func (s *Set) ListenFor(app string, slot int, addr Addr, ipv6Only bool) (*os.File, string, error) {
	var f *os.File
	var name string
	err := ErrSetClosed
	s.do(func() { f, name, err = s.listenFor(app, slot, addr, ipv6Only) })
	return f, name, err
}

func (s *Set) listenFor(app string, slot int, addr Addr, ipv6Only bool) (*os.File, string, error) {
	name := ClusterName(addr, ipv6Only)
	g := s.cluster[app][name]
	if g == nil {
		var err error
		if g, err = openGroup(name, addr, Options{IPv6Only: ipv6Only}); err != nil {
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

// Adopt keeps the sockets a surviving instance of app holds, each as its
// slot's member of its group, unless the group has that member already
// (the same socket, from the other process of a reload): then the copy is
// closed. A socket that does not listen is closed and logged. The Set owns
// the files from here on. The groups are used once AdoptionDone is called.
func (s *Set) Adopt(app string, socks []Adopted) {
	if !s.do(func() { s.adopt(app, socks) }) {
		for _, sk := range socks {
			sk.File.Close()
		}
	}
}

func (s *Set) adopt(app string, socks []Adopted) {
	for _, sk := range socks {
		local, err := listeningAddr(sk.File)
		if err != nil {
			s.log.Warn("a surviving instance handed back a socket that is not listening", "app", app, "name", sk.Name, "err", err)
			sk.File.Close()
			continue
		}
		var g *group
		if sk.Cluster {
			if s.cluster[app] == nil {
				s.cluster[app] = map[string]*group{}
			}
			if g = s.cluster[app][sk.Name]; g == nil {
				g = &group{name: sk.Name, apps: map[string]bool{app: true}}
				s.cluster[app][sk.Name] = g
			}
		} else {
			if slices.ContainsFunc(slices.Collect(maps.Values(s.byAddr)), func(b *group) bool { return b.name == sk.Name }) {
				sk.File.Close() // claimed already
				continue
			}
			if g = s.adopted[sk.Name]; g == nil {
				g = &group{name: sk.Name, apps: map[string]bool{}}
				s.adopted[sk.Name] = g
			}
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

// AdoptionDone ends an adoption: the groups of adopted sockets settle and
// are steered to the slots that serve.
func (s *Set) AdoptionDone() {
	s.do(s.adoptionDone)
}

func (s *Set) adoptionDone() {
	for _, g := range s.adopted {
		if !g.settled {
			g.settle()
		}
	}
	for _, byName := range s.cluster {
		for _, g := range byName {
			if !g.settled {
				if t, ok := g.first().local.(*net.TCPAddr); ok {
					g.addr = TCPAddr(t.IP.String(), t.Port)
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
	return FileAddr(f)
}

// Names lists app's sockets as bound (e.g. "127.0.0.1:3000"): its
// `listen` sockets in order, then those bound for it in cluster mode.
func (s *Set) Names(app string, listen []string) []string {
	var out []string
	s.do(func() { out = s.names(app, listen) })
	return out
}

func (s *Set) names(app string, listen []string) []string {
	var out []string
	for _, l := range listen {
		addr, err := Parse(l)
		if err != nil {
			continue
		}
		if g, ok := s.byAddr[addr.String()]; ok {
			out = append(out, g.first().local.String())
		}
	}
	cl := slices.SortedFunc(maps.Values(s.cluster[app]), func(x, y *group) int { return cmp.Compare(x.name, y.name) })
	for _, g := range cl {
		out = append(out, g.first().local.String())
	}
	return out
}

// Prune closes the sockets that no defined app needs any more: `listen`
// sockets no app names, cluster-mode sockets of apps that are gone, and
// adopted sockets no app claimed. defined maps every defined app to its
// `listen`.
func (s *Set) Prune(defined map[string][]string) {
	s.do(func() { s.prune(defined) })
}

func (s *Set) prune(defined map[string][]string) {
	used := map[string]bool{}
	for _, listen := range defined {
		for _, l := range listen {
			if addr, err := Parse(l); err == nil {
				used[addr.String()] = true
			}
		}
	}
	for k, g := range s.byAddr {
		if !used[k] {
			g.close()
			delete(s.byAddr, k)
			continue
		}
		for app := range g.apps {
			if _, ok := defined[app]; !ok {
				delete(g.apps, app)
			}
		}
	}
	for app, byName := range s.cluster {
		if _, ok := defined[app]; ok {
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
		if _, ok := defined[app]; !ok {
			delete(s.serving, app)
		}
	}
}

func (s *Set) closeAll() {
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
