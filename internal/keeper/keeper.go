package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/cgroup"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/sdnotify"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

const (
	// drainBound is how long after the app's exit the keeper waits for its
	// log pipes to reach EOF before it closes them.
	drainBound = 2 * time.Second
	// peerQueue is how many messages may wait for a daemon that does not
	// read before the keeper drops its connection (it reconnects and gets
	// a new hello). Adjacent status messages are merged, so only a stuck
	// daemon gets there.
	peerQueue = 1024
	// peerWriteTimeout bounds one write to a daemon.
	peerWriteTimeout = 10 * time.Second
	// crashKillGrace is how long after kill_timeout a Node app draining
	// after a fatal error (graceful crash) is SIGKILLed if it has not
	// exited: its preload exits on its own at kill_timeout.
	crashKillGrace = time.Second
)

// keeper is the running keeper process. The fields after "owned by run"
// belong to the run goroutine; everything else is set before run starts
// and not changed after.
type keeper struct {
	cfg       *Config
	app       *spec.App
	log       *slog.Logger
	paths     paths
	ln        *net.UnixListener
	proc      *proc.Process
	group     *cgroup.Group    // the app's cgroup, or nil
	notify    *sdnotify.Server // nil unless ready: notify
	node      NodeChannel      // nil unless a Node IPC channel is open
	listeners []*os.File
	logOut    *logs.Writer // for log_bytes
	logErr    *logs.Writer
	outR      *os.File // the read ends of the app's stdout and stderr
	errR      *os.File
	poller    *logs.Poller   // captures outR and errR; nil: a goroutine each
	wires     *wirePoller    // accepts on ln and reads the daemons; nil: goroutines do
	lnReads   *wireEntry     // ln, where wires accepts
	streams   []*logs.Stream // the poller's streams of outR and errR
	captured  chan struct{}  // closed once both captures ended

	readyCtx  context.Context // readiness probes and the node channel; cancelled at exit
	stopReady context.CancelFunc
	nodeDone  chan struct{}  // closed when node.Serve returned; nil without a node channel
	wg        sync.WaitGroup // every goroutine the keeper started

	joinC   chan joining
	leaveC  chan *peer
	cmdC    chan peerCommand
	readyC  chan struct{}
	nodeC   chan NodeEvent  // nil without a Node channel
	listenC chan *listenAsk // nil without a Node channel
	exitC   chan spec.Exit
	diedC   chan struct{} // the app is gone; its logs may still be draining
	quit    chan struct{} // closed when run ends, so nobody blocks on the channels above

	// owned by run
	state       State
	peers       map[*peer]struct{}
	asks        map[int]*listenAsk // listen requests no daemon answered yet, by id
	lastAsk     int
	cluster     []Socket   // sockets daemons bound for the app (ListenFor); closed at the end
	retired     []*os.File // cluster sockets replaced by a later answer; closed at the end
	killTimer   *time.Timer
	killC       <-chan time.Time
	killAt      time.Time
	terminating bool // a signal asked the keeper to stop the app and go
	released    bool
	orphaned    bool // no daemon knows of this instance: it releases itself at the exit
	steered     bool // steerAway ran
}

// peer is one daemon connection: run queues messages, and a writer
// goroutine, started when something is queued and ended when the queue is
// empty, writes them. An idle connection holds no writer: a keeper process
// of a thousand instances would hold a thousand parked ones.
type peer struct {
	conn *net.UnixConn

	mu      sync.Mutex
	queue   []message
	closed  bool // dropped: the writer writes what is queued, then closes conn
	writing bool // a writer runs; it owns conn's writes until it ends

	reads *wireEntry // where the keeper process's wirePoller reads p; nil: readPeer does

	// What the wirePoller read from p, on its way to run: the poller
	// never waits for one instance's run.
	in inbox[inbound]
}

// inbound is a command from a peer, or (leave) the end of its connection.
type inbound struct {
	cmd   command
	leave bool
}

// push queues m, merging it into a status message queued just before. It
// reports false when the queue is full, and start when the caller must
// start a writer.
func (p *peer) push(m message) (ok, start bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return true, false
	}
	if n := len(p.queue); m.Type == msgStatus && n > 0 && p.queue[n-1].Type == msgStatus {
		p.queue[n-1] = m
		return true, false
	}
	if len(p.queue) >= peerQueue {
		return false, false
	}
	p.queue = append(p.queue, m)
	return true, p.claimWriter()
}

// claimWriter reports whether the caller is to start the writer (none
// runs); p.mu is held.
func (p *peer) claimWriter() bool {
	if p.writing {
		return false
	}
	p.writing = true
	return true
}

type peerCommand struct {
	p   *peer
	cmd command
}

// listenAsk is a listen request of the app's Node channel waiting for a
// daemon's answer.
type listenAsk struct {
	req   ListenRequest
	reply chan listenAnswer // capacity 1: run never blocks on it
}

type listenAnswer struct {
	file *os.File // the keeper's; open until the keeper ends
	err  error
}

// errKeeperEnding answers requests that arrive while the keeper shuts down.
var errKeeperEnding = errors.New("the keeper is ending")

// askDaemon returns a function that asks, through run, a daemon for the
// socket of a cluster-mode listen (NodeIPCRequest.ListenFor). It waits
// for a daemon to connect if none is, and for its answer, until ctx is
// done or the keeper ends.
func askDaemon(listenC chan<- *listenAsk, quit <-chan struct{}) func(context.Context, ListenRequest) (*os.File, error) {
	return func(ctx context.Context, req ListenRequest) (*os.File, error) {
		a := &listenAsk{req: req, reply: make(chan listenAnswer, 1)}
		select {
		case listenC <- a:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-quit:
			return nil, errKeeperEnding
		}
		select {
		case ans := <-a.reply:
			return ans.file, ans.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-quit:
			return nil, errKeeperEnding
		}
	}
}

// run is the keeper's owner loop. It returns after a release, or after a
// termination signal once the exit was reported, having stopped every
// goroutine and removed the keeper's files.
func (k *keeper) run(sigC <-chan os.Signal) {
	var notifyC <-chan sdnotify.Message
	if k.notify != nil {
		notifyC = k.notify.Messages()
	}
	exitC := k.exitC
	procDone := k.proc.Done()
	for !k.released && !(k.terminating && k.state.Exit != nil) {
		select {
		case j := <-k.joinC:
			k.join(j)
		case p := <-k.leaveC:
			k.drop(p)
		case pc := <-k.cmdC:
			k.handle(pc)
		case <-k.readyC:
			k.setReady()
		case ev := <-k.nodeC:
			k.onNode(ev)
		case a := <-k.listenC:
			k.onListen(a)
		case m, ok := <-notifyC:
			if !ok {
				notifyC = nil
				continue
			}
			k.onNotify(m)
		case <-k.killC:
			k.killC = nil
			if err := k.proc.Signal(syscall.SIGKILL); err == nil {
				k.log.Warn("keeper: app did not stop in time; SIGKILLed its process group")
			}
		case <-procDone:
			procDone = nil
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				k.drain()
			}()
		case <-k.diedC:
			// Before the logs are drained: every moment counts for the
			// connections that would land on the dead app's sockets.
			if len(k.peers) == 0 {
				k.steerAway()
			}
		case ex := <-exitC:
			exitC = nil
			k.exited(ex)
		case sig := <-sigC:
			k.onSignal(sig)
		}
	}
	k.shutdown()
}

func (k *keeper) onSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		k.log.Info("keeper: stopping the app on a signal", "signal", sig)
		k.terminating = true
		if k.state.Exit == nil {
			k.stop(k.app.Signal(), k.app.KillTimeout.D())
		}
	default:
		// SIGPIPE and SIGHUP: nothing to do; we only must not die of them.
	}
}

// stop signals the app's group and arms the SIGKILL. A later stop can only
// bring the SIGKILL closer.
func (k *keeper) stop(sig syscall.Signal, timeout time.Duration) error {
	k.state.StopRequested = true
	if err := k.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	k.armKill(timeout)
	return nil
}

// armKill SIGKILLs the app's group after timeout, unless an earlier
// SIGKILL is armed already.
func (k *keeper) armKill(timeout time.Duration) {
	at := time.Now().Add(timeout)
	if k.killTimer == nil || at.Before(k.killAt) {
		if k.killTimer != nil {
			k.killTimer.Stop()
		}
		k.killAt = at
		k.killTimer = time.NewTimer(timeout)
		k.killC = k.killTimer.C
	}
}

func (k *keeper) handle(pc peerCommand) {
	c := pc.cmd
	r := message{Type: msgReply, Seq: c.Seq}
	fail := func(code string, err error) {
		r.Code, r.Error = code, err.Error()
	}
	if c.Cmd != cmdSocket {
		closeFiles(c.files) // none is expected
	}
	switch c.Cmd {
	case cmdSignal, cmdStop:
		sig, err := spec.ParseSignal(c.Signal)
		switch {
		case err != nil:
			fail(codeBadCommand, err)
		case k.state.Exit != nil:
			fail(codeExited, os.ErrProcessDone)
		case c.Cmd == cmdStop:
			if err := k.stop(sig, time.Duration(c.TimeoutMs)*time.Millisecond); err != nil {
				fail("", err)
			}
		default:
			if err := k.proc.Signal(sig); errors.Is(err, os.ErrProcessDone) {
				fail(codeExited, err)
			} else if err != nil {
				fail("", err)
			}
		}
	case cmdLogBytes:
		r.LogBytes = []uint64{k.logOut.Captured(), k.logErr.Captured()}
	case cmdRelease:
		if k.state.Exit == nil {
			fail(codeRunning, errors.New("the app is still running"))
			break
		}
		k.released = true
	case cmdSocket:
		if err := k.onSocket(c); err != nil {
			fail(codeBadCommand, err)
		}
	case cmdSockets:
		for i, f := range k.listeners {
			r.Sockets = append(r.Sockets, socketInfo{Name: k.cfg.ListenNames[i], Kind: SocketListen})
			r.files = append(r.files, f)
		}
		for _, s := range k.cluster {
			r.Sockets = append(r.Sockets, socketInfo{Name: s.Name, Kind: SocketCluster})
			r.files = append(r.files, s.File)
		}
		r.FDs = len(r.files)
	default:
		fail(codeBadCommand, errors.New("unknown command "+c.Cmd))
	}
	k.send(pc.p, r)
}

// onListen sends a listen request to every connected daemon; one that
// connects later gets it on joining. The first answer counts.
func (k *keeper) onListen(a *listenAsk) {
	if k.state.Exit != nil {
		a.reply <- listenAnswer{err: errors.New("the app has exited")}
		return
	}
	k.lastAsk++
	a.req.ID = k.lastAsk
	k.asks[a.req.ID] = a
	k.log.Info("keeper: asking the daemon for the app's socket", "request", a.req.ID, "host", a.req.Host, "port", a.req.Port, "daemons", len(k.peers))
	req := a.req
	k.broadcast(message{Type: msgListen, Listen: &req})
}

// onSocket takes a daemon's answer to a listen request. The socket is kept
// (and handed back by the sockets command) until the keeper ends; a
// second socket under the same name replaces the first in that list (the
// app holds its own copy of whichever it got). An answer nobody waits for
// any more (another daemon answered first, the app exited) is dropped.
func (k *keeper) onSocket(c command) error {
	a, ok := k.asks[c.ID]
	if !ok {
		closeFiles(c.files)
		return nil
	}
	if c.Error != "" {
		delete(k.asks, c.ID)
		closeFiles(c.files)
		a.reply <- listenAnswer{err: daemonError(c.Error, c.Code)}
		return nil
	}
	if len(c.files) != 1 || c.Name == "" {
		closeFiles(c.files)
		return fmt.Errorf("a socket answer needs a name and one descriptor, got %q and %d", c.Name, len(c.files))
	}
	delete(k.asks, c.ID)
	f := c.files[0]
	if i := slices.IndexFunc(k.cluster, func(s Socket) bool { return s.Name == c.Name }); i >= 0 {
		// Closed at the end, not now: a reply being written may hold it.
		k.retired = append(k.retired, k.cluster[i].File)
		k.cluster[i].File = f
	} else {
		k.cluster = append(k.cluster, Socket{Name: c.Name, Kind: SocketCluster, File: f})
	}
	a.reply <- listenAnswer{file: f}
	return nil
}

// daemonError is a daemon's refusal of a listen request; a code that
// names an errno wraps it, so the Node app's server emits that code.
func daemonError(msg, code string) error {
	if code != "" && code != "EKEEL" {
		for e := syscall.Errno(1); e < 256; e++ {
			if unix.ErrnoName(e) == code {
				return &listenError{msg: msg, errno: e}
			}
		}
	}
	return errors.New(msg)
}

type listenError struct {
	msg   string
	errno syscall.Errno
}

func (e *listenError) Error() string { return e.msg }
func (e *listenError) Unwrap() error { return e.errno }

func (k *keeper) setReady() {
	if k.state.Ready || k.state.Exit != nil {
		return
	}
	k.state.Ready = true
	k.broadcast(message{Type: msgReady})
}

// setStopping records that the app is going down on its own; crash says
// it is a graceful crash, which may follow a plain stopping, and text is
// the fatal error the app printed for it.
func (k *keeper) setStopping(crash bool, text string) {
	if k.state.Exit != nil || k.state.Stopping && (k.state.Crashing || !crash) {
		return
	}
	k.state.Stopping = true
	k.state.Crashing = crash
	k.state.CrashText = text
	k.broadcast(message{Type: msgStopping, Crash: crash, Text: text})
}

func (k *keeper) onNotify(m sdnotify.Message) {
	if k.state.Exit != nil {
		return
	}
	if m.Ready() {
		k.setReady()
	}
	if st, ok := m.Status(); ok && st != k.state.Status {
		k.state.Status = st
		k.broadcast(message{Type: msgStatus, Text: st})
	}
	if m.Stopping() {
		k.setStopping(false, "")
	}
	if pid, ok := m.MainPID(); ok && pid != k.state.Pid {
		k.log.Warn("keeper: MAINPID is not supported; the spawned process stays the main one", "mainpid", pid)
	}
}

func (k *keeper) onNode(ev NodeEvent) {
	switch ev.Kind {
	case NodeReady:
		if k.app.Ready == spec.ReadyMessage {
			k.setReady()
		}
	case NodeListening:
		if k.app.Ready == spec.ReadyListen {
			k.setReady()
		}
	case NodeStopping:
		k.setStopping(false, "")
	case NodeCrashing:
		k.setStopping(true, ev.Text)
		// The preload exits once drained, or after kill_timeout; this is
		// for an event loop that never gets there.
		k.armKill(k.app.KillTimeout.D() + crashKillGrace)
		if len(k.peers) == 0 && !k.steered {
			k.steerAway()
		}
	}
}

// exited records the app's exit (its logs are drained) and tells the
// daemons.
func (k *keeper) exited(ex spec.Exit) {
	// What the app said before it exited is reported before the exit.
	if k.notify != nil {
		msgs, err := k.notify.Shutdown()
		if err != nil {
			k.log.Warn("keeper: closing the notify socket", "err", err)
		}
		for _, m := range msgs {
			k.onNotify(m)
		}
	}
	for pending := true; pending; {
		select {
		case ev := <-k.nodeC:
			k.onNode(ev)
		default:
			pending = false
		}
	}
	k.state.Exit = &ex
	for id, a := range k.asks {
		delete(k.asks, id)
		a.reply <- listenAnswer{err: errors.New("the app has exited")}
	}
	k.stopReady()
	if k.killTimer != nil {
		k.killTimer.Stop()
		k.killC = nil
	}
	k.log.Info("keeper: app exited", "exit", ex.String())
	if len(k.peers) == 0 && !k.steered {
		k.steerAway()
	}
	k.broadcast(message{Type: msgExit, Exit: &ex})
	if k.orphaned {
		k.released = true
	}
}

// steerAway sends the new connections of the app's shared ports to the
// other instances, when the app exited while no daemon is there to do it
// (a daemon steers by the serving slots its supervisor publishes; see
// supervisor.Config.Serving and sockets.Set).
// Otherwise the connections would wait on this instance's socket until a
// daemon comes back and restarts it. It assumes the instances 0…N-1 of
// the app as spawned.
func (k *keeper) steerAway() {
	k.steered = true
	n := max(k.app.Instances, k.state.Instance+1)
	var others []int
	for i := 0; i < n; i++ {
		if i != k.state.Instance {
			others = append(others, i)
		}
	}
	if len(others) == 0 {
		return // the only instance: connections wait for its restart
	}
	files := slices.Clone(k.listeners)
	for _, s := range k.cluster {
		files = append(files, s.File)
	}
	for _, f := range files {
		if f == nil || !sockets.ReusesPort(f) {
			continue
		}
		if err := sockets.Steer(f, others); err != nil {
			k.log.Warn("keeper: steering connections to the other instances", "err", err)
			continue
		}
		k.log.Info("keeper: no daemon; new connections go to the other instances", "instances", others)
	}
}

// capture copies the app's stdout and stderr into the logs until both
// pipes reach EOF (or are closed); then captured is closed. Through the
// keeper process's poller a pipe costs no goroutine while the app runs; a
// pipe the poller cannot take (no descriptor left to duplicate it, say)
// gets a goroutine of its own rather than go unread.
func (k *keeper) capture() {
	k.captured = make(chan struct{})
	var left atomic.Int32
	left.Store(2)
	done := func(stream string, err error) {
		if err != nil && !errors.Is(err, os.ErrClosed) {
			k.log.Error("keeper: capturing the app's output", "stream", stream, "err", err)
		}
		if left.Add(-1) == 0 {
			close(k.captured)
		}
	}
	for _, c := range []struct {
		w      *logs.Writer
		r      *os.File
		stream string
	}{{k.logOut, k.outR, logs.Stdout}, {k.logErr, k.errR, logs.Stderr}} {
		if k.poller != nil {
			s, err := k.poller.Capture(c.w, c.r, func(err error) { done(c.stream, err) })
			if err == nil {
				k.streams = append(k.streams, s)
				continue
			}
			k.log.Warn("keeper: capturing the app's output with a goroutine", "stream", c.stream, "err", err)
		}
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			done(c.stream, c.w.Capture(c.r))
		}()
	}
}

// drain runs once the app has exited (run starts it): once both pipes
// reached EOF (or drainBound passed), it closes the logs and hands the
// exit to run.
func (k *keeper) drain() {
	outR, errR, wOut, wErr, captured := k.outR, k.errR, k.logOut, k.logErr, k.captured
	oom := false
	if k.group != nil {
		oom = oomKilled(k.group)
		// proc emptied it at the exit.
		if err := k.group.Remove(); err != nil {
			k.log.Warn("keeper: removing the app's cgroup", "err", err)
		}
	}
	k.diedC <- struct{}{}
	ex := k.proc.Exit()
	t := time.NewTimer(drainBound)
	defer t.Stop()
	expired := false
	select {
	case <-captured:
	case <-t.C:
		expired = true
		k.log.Warn("keeper: a process outside the app's group holds its stdout or stderr; closing them", "after", drainBound)
		outR.Close()
		errR.Close()
		for _, s := range k.streams {
			k.poller.CloseStream(s)
		}
		<-captured
	}
	// Likewise the node channel: its last messages come before the exit.
	if k.nodeDone != nil && !expired {
		select {
		case <-k.nodeDone:
		case <-t.C:
			k.log.Warn("keeper: the node channel is still open after the app's exit", "after", drainBound)
		}
	}
	outR.Close()
	errR.Close()
	for _, w := range []*logs.Writer{wOut, wErr} {
		if err := w.Close(); err != nil {
			k.log.Error("keeper: closing a log", "err", err)
		}
	}
	sx := specExit(ex)
	if oom && !sx.Clean() {
		sx.Cause = spec.CauseOOMKilled
	}
	k.exitC <- sx
}

// oomKilled reports whether the kernel's OOM killer ended a process of
// the instance's cgroup (memory.events' oom_kill; false without the memory
// controller).
func oomKilled(g *cgroup.Group) bool {
	n, ok := g.OOMKills()
	return ok && n > 0
}

func specExit(ex proc.Exit) spec.Exit {
	switch {
	case ex.Signal != 0:
		return spec.ExitSignal(spec.SignalName(ex.Signal), ex.At)
	case ex.Code >= 0:
		return spec.ExitCode(ex.Code, ex.At)
	}
	return spec.Exit{At: ex.At}
}

// joining is a daemon's new connection: conn to write to, and, where
// the keeper process's wirePoller reads it, rd, the descriptor it reads.
type joining struct {
	conn *net.UnixConn
	rd   int // -1: a readPeer goroutine reads conn
}

// accept takes daemon connections until the listener is closed (when no
// wirePoller does it for every instance: acceptFd).
func (k *keeper) accept() {
	backoff := 5 * time.Millisecond
	for {
		c, err := k.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, say: retry, as net/http does.
			k.log.Warn("keeper: accepting", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-k.quit:
				t.Stop()
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !sameUser(c) {
			k.log.Warn("keeper: refused a connection from another user")
			c.Close()
			continue
		}
		select {
		case k.joinC <- joining{conn: c, rd: -1}:
		case <-k.quit:
			c.Close()
			return
		}
	}
}

// acceptFd takes a connection the wirePoller accepted on the instance's
// socket (on the poller's goroutine, which must not wait for run: a
// goroutine of its own hands the connection over).
func (k *keeper) acceptFd(fd int) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || (cred.Uid != uint32(os.Getuid()) && cred.Uid != 0) {
		k.log.Warn("keeper: refused a connection from another user")
		unix.Close(fd)
		return
	}
	c, err := connForWrites(fd)
	if err != nil {
		k.log.Warn("keeper: accepting", "err", err)
		unix.Close(fd)
		return
	}
	go func() {
		select {
		case k.joinC <- joining{conn: c, rd: fd}:
		case <-k.quit:
			c.Close()
			unix.Close(fd)
		}
	}()
}

// sameUser reports whether the peer runs as our uid (or as root).
func sameUser(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	cerr := rc.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cerr == nil && err == nil && (cred.Uid == uint32(os.Getuid()) || cred.Uid == 0)
}

// join starts serving a daemon: hello first.
func (k *keeper) join(j joining) {
	p := &peer{conn: j.conn}
	k.peers[p] = struct{}{}
	if j.rd < 0 {
		k.wg.Add(1)
		go k.readPeer(p)
	} else if p.reads, _ = k.wires.read(j.rd, nil, k.peerLine(p), k.peerEnd(p)); p.reads == nil {
		// The poller has ended (the keeper process is going): this
		// daemon is served no more.
		k.drop(p)
		return
	}
	st := k.state
	k.send(p, message{Type: msgHello, State: &st})
	ids := make([]int, 0, len(k.asks))
	for id := range k.asks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		req := k.asks[id].req
		k.send(p, message{Type: msgListen, Listen: &req})
	}
}

// peerLine handles, on the wirePoller's goroutine, a line from p: a
// command for run. False ends the connection.
func (k *keeper) peerLine(p *peer) func([]byte, *wireReader) bool {
	return func(line []byte, r *wireReader) bool {
		c, ok := k.command(line, r)
		if ok {
			k.deliver(p, inbound{cmd: c})
		}
		return ok
	}
}

// peerEnd tells run, once the wirePoller stopped reading p, that p left.
func (k *keeper) peerEnd(p *peer) func(error) {
	return func(error) { k.deliver(p, inbound{leave: true}) }
}

// deliver queues in for run without waiting for it.
func (k *keeper) deliver(p *peer, in inbound) {
	if p.in.post(in) {
		go k.deliverInbox(p)
	}
}

// deliverInbox hands p's inbox to run in order, until it is empty or the
// keeper ends (then commands' descriptors are closed).
func (k *keeper) deliverInbox(p *peer) {
	for {
		in, ok := p.in.next()
		if !ok {
			return
		}
		if in.leave {
			select {
			case k.leaveC <- p:
			case <-k.quit:
			}
			continue
		}
		select {
		case k.cmdC <- peerCommand{p, in.cmd}:
		case <-k.quit:
			closeFiles(in.cmd.files)
		}
	}
}

// command decodes a daemon's line and takes its descriptors.
func (k *keeper) command(line []byte, r *wireReader) (command, bool) {
	var c command
	if err := json.Unmarshal(line, &c); err != nil {
		k.log.Warn("keeper: a daemon sent a line that is not a command", "err", err)
		return c, false
	}
	var err error
	if c.files, err = r.take(c.FDs); err != nil {
		k.log.Warn("keeper: reading a command", "err", err)
		return c, false
	}
	return c, true
}

func (k *keeper) readPeer(p *peer) {
	defer k.wg.Done()
	r := newWireReader(p.conn)
	defer r.close()
	for {
		line, err := r.next()
		if err != nil {
			break
		}
		c, ok := k.command(line, r)
		if !ok {
			break
		}
		select {
		case k.cmdC <- peerCommand{p, c}:
		case <-k.quit:
			closeFiles(c.files)
			return
		}
	}
	select {
	case k.leaveC <- p:
	case <-k.quit:
	}
}

// startWriter starts p's writer; the caller claimed it. Only run starts
// writers, so its shutdown's wg.Wait sees every one.
func (k *keeper) startWriter(p *peer) {
	k.wg.Add(1)
	go k.writePeer(p)
}

// writePeer writes p's queue until it is empty, and then ends; once p was
// dropped and nothing is left, it closes the connection (which ends
// readPeer too).
func (k *keeper) writePeer(p *peer) {
	defer k.wg.Done()
	var buf []byte
	for {
		p.mu.Lock()
		batch, closed := p.queue, p.closed
		p.queue = nil
		if len(batch) == 0 {
			p.writing = false
			p.mu.Unlock()
			if closed {
				k.closePeer(p)
			}
			return
		}
		p.mu.Unlock()
		buf = buf[:0]
		p.conn.SetWriteDeadline(time.Now().Add(peerWriteTimeout))
		if err := k.writeBatch(p, batch, buf); err != nil {
			// The connection is broken: readPeer sees it too, and run
			// drops p. What is queued meanwhile is discarded.
			k.closePeer(p)
			p.mu.Lock()
			p.queue, p.closed, p.writing = nil, true, false
			p.mu.Unlock()
			return
		}
	}
}

// closePeer closes p's connection, and so that the daemon sees it closed,
// the poller's descriptor of it too.
func (k *keeper) closePeer(p *peer) {
	p.conn.Close()
	if p.reads != nil {
		k.wires.remove(p.reads)
	}
}

// writeBatch writes batch, each line with descriptors in a sendmsg of
// its own.
func (k *keeper) writeBatch(p *peer, batch []message, buf []byte) error {
	for _, m := range batch {
		b, err := json.Marshal(m)
		if err != nil {
			k.log.Error("keeper: encoding a message", "err", err)
			continue
		}
		if len(m.files) == 0 {
			buf = append(append(buf, b...), '\n')
			continue
		}
		if len(buf) > 0 {
			if _, err := p.conn.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if err := writeWithFiles(p.conn, append(b, '\n'), m.files); err != nil {
			return err
		}
	}
	if len(buf) > 0 {
		if _, err := p.conn.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// drop stops serving p; what is queued for it is still written.
func (k *keeper) drop(p *peer) {
	p.mu.Lock()
	start := false
	if !p.closed {
		p.closed = true
		start = p.claimWriter()
	}
	p.mu.Unlock()
	if start {
		k.startWriter(p)
	}
	delete(k.peers, p)
}

func (k *keeper) send(p *peer, m message) {
	ok, start := p.push(m)
	if start {
		k.startWriter(p)
	}
	if !ok {
		// The daemon does not read; it gets the whole state again when it
		// reconnects.
		k.log.Warn("keeper: dropping a daemon connection that does not read")
		k.drop(p)
	}
}

func (k *keeper) broadcast(m message) {
	for p := range k.peers {
		k.send(p, m)
	}
}

// shutdown ends the keeper: no more connections, queued lines written,
// every goroutine gone, files removed.
func (k *keeper) shutdown() {
	close(k.quit)
	k.ln.Close()
	if k.lnReads != nil {
		k.wires.remove(k.lnReads)
	}
	for p := range k.peers {
		k.drop(p)
	}
	k.stopReady()
	if k.notify != nil {
		k.notify.Close()
	}
	if k.killTimer != nil {
		k.killTimer.Stop()
	}
	k.wg.Wait()
	if k.node != nil {
		if err := k.node.Close(); err != nil {
			k.log.Warn("keeper: closing the node channel", "err", err)
		}
	}
	for _, f := range k.listeners {
		f.Close()
	}
	for _, s := range k.cluster {
		s.File.Close()
	}
	closeFiles(k.retired)
	if err := k.paths.remove(); err != nil {
		k.log.Warn("keeper: removing files", "err", err)
	}
	k.log.Info("keeper: done")
}
