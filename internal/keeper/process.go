package keeper

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

const (
	// defaultCallTimeout bounds a command's round trip to the keeper.
	defaultCallTimeout = 5 * time.Second
	// maxRedials is how often a process reconnects to a keeper that
	// dropped the connection while still running.
	maxRedials = 10
)

var (
	errNotConnected = errors.New("not connected to the keeper")
	errNoAnswer     = errors.New("the keeper did not answer")
)

// process is the daemon's handle on one keeper and its app: a
// supervisor.Process. The Spawner's wirePoller reads the keeper's lines
// (a goroutine of the process's own does if the poller cannot), and a
// goroutine that runs only while some are queued handles them: it queues
// events, and after the connection's end reconnects or finds the keeper
// gone. An idle instance so holds no goroutine in the daemon. A pump
// goroutine hands the events to Events, unless Notify took them, so a
// slow consumer never stalls the reading (and so never the replies to
// commands). Consecutive status events that were not delivered yet are
// merged, which bounds the queue.
type process struct {
	s      *Spawner
	paths  paths
	st     State // the first hello: the ids and start times
	log    *slog.Logger
	events chan supervisor.Event
	wake   chan struct{} // a queued event waits (capacity 1)
	detach chan struct{} // closed by detachNow
	wg     sync.WaitGroup

	// mu guards the fields below and serialises writes to conn.
	mu          sync.Mutex
	conn        *net.UnixConn // nil while reconnecting or after the end
	reads       *wireEntry    // where the wirePoller reads conn; nil: the read goroutine does, or none
	reconnected chan struct{} // while reconnecting: closed when that is over
	seq         int
	pending     map[int]chan message
	queue       []supervisor.Event
	ready       bool // EventReady queued
	stopping    bool // EventStopping (or EventCrashing) queued
	crashing    bool // EventCrashing queued
	status      string
	exited      bool // EventExit queued
	released    bool
	detached    bool
	pumping     bool                   // pump runs (Events was called)
	notify      func(supervisor.Event) // set by Notify: events go there

	// bgMu guards bgClosed; bg counts the goroutines of Stop and
	// Release, writes those whose command is not written yet.
	bgMu     sync.Mutex
	bgClosed bool
	bg       sync.WaitGroup
	writes   sync.WaitGroup

	// What the wirePoller read, on its way to handle: the poller waits
	// for no process (mu may be held across a write to a keeper that does
	// not read).
	in      inbox[fromKeeper]
	redials int // only the connection's reader touches it
}

// fromKeeper is a message a keeper sent, or (end) the end of its
// connection, with the error that ended it.
type fromKeeper struct {
	m   message
	end bool
	err error
}

var _ supervisor.Process = (*process)(nil)

func newProcess(s *Spawner, pp paths, conn *net.UnixConn, rd *wireReader, st *State) *process {
	p := &process{
		s:       s,
		paths:   pp,
		st:      *st,
		log:     s.log.With("id", st.ID, "app", st.App, "instance", st.Instance, "pid", st.Pid),
		events:  make(chan supervisor.Event, 1),
		wake:    make(chan struct{}, 1),
		detach:  make(chan struct{}),
		conn:    conn,
		pending: map[int]chan message{},
	}
	p.applyLocked(st)
	p.wg.Add(1) // the connection's reading, up to its final end
	p.mu.Lock()
	p.readLocked(conn, rd)
	p.mu.Unlock()
	return p
}

// readLocked has the Spawner's wirePoller read conn, or else a goroutine.
// rd holds what was read from conn so far; it is taken over. p.mu is held.
func (p *process) readLocked(conn *net.UnixConn, rd *wireReader) {
	if w := p.s.wires; w != nil {
		fd, err := dupSocket(conn)
		if err == nil {
			r := &wireReader{buf: rd.buf, fds: rd.fds, err: rd.err}
			var parseErr error
			line := func(line []byte, r *wireReader) bool {
				m, err := parseMessage(line, r)
				if err != nil {
					parseErr = err
					return false
				}
				p.post(fromKeeper{m: m})
				return true
			}
			end := func(err error) {
				if parseErr != nil {
					err = parseErr
				}
				p.post(fromKeeper{end: true, err: err})
			}
			if p.reads, err = w.read(fd, r, line, end); err == nil {
				rd.buf, rd.fds = nil, nil // the poller's now
				return
			}
		}
		p.log.Warn("reading the keeper with a goroutine of its own", "err", err)
	}
	go p.read(rd)
}

// post queues what the wirePoller read, and starts a goroutine to handle
// it unless one runs.
func (p *process) post(in fromKeeper) {
	if p.in.post(in) {
		go p.deliver()
	}
}

// deliver handles what is queued, then ends.
func (p *process) deliver() {
	for {
		in, ok := p.in.next()
		if !ok {
			return
		}
		if !in.end {
			p.mu.Lock()
			p.messageLocked(in.m)
			p.mu.Unlock()
			continue
		}
		p.mu.Lock()
		p.reads = nil
		p.mu.Unlock()
		if conn, rd := p.ended(in.err); conn != nil {
			p.mu.Lock()
			p.readLocked(conn, rd)
			p.mu.Unlock()
		} else {
			p.readingEnded()
		}
	}
}

// Notify hands every event from now on to f instead of Events (the
// queued ones first), so no goroutine per process moves them
// (supervisor.Notifier). f is called with the process's lock held.
func (p *process) Notify(f func(supervisor.Event)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = f
	for _, ev := range p.queue {
		f(ev)
	}
	p.queue = nil
}

// ID is the keeper's id.
func (p *process) ID() string { return p.st.ID }

// Pid is the app's pid.
func (p *process) Pid() int { return p.st.Pid }

// Started is when the keeper spawned the app.
func (p *process) Started() time.Time { return p.st.Started }

// Events delivers Ready, Status and Stopping, then one Exit, then is
// closed (unless the Spawner is closed first: then it just stops).
func (p *process) Events() <-chan supervisor.Event {
	p.mu.Lock()
	if !p.pumping && !p.detached && p.notify == nil {
		p.pumping = true
		p.wg.Add(1)
		go p.pump()
	}
	p.mu.Unlock()
	return p.events
}

// Signal sends sig to the app's process group through the keeper. It
// returns os.ErrProcessDone once the app has exited.
func (p *process) Signal(sig syscall.Signal) error {
	_, err := p.call(command{Cmd: cmdSignal, Signal: spec.SignalName(sig)}, false)
	if err != nil {
		return fmt.Errorf("signalling pid %d: %w", p.st.Pid, err)
	}
	return nil
}

// Stop sends sig and has the keeper SIGKILL the group after timeout. It
// returns at once, as the supervisor's owner loop calls it: the command
// goes out from a goroutine of its own, so a keeper that is slow to
// answer (or never does) stalls nothing but that goroutine. A failure is
// logged; the exit follows as usual, or "keeper lost" if the keeper dies.
func (p *process) Stop(sig syscall.Signal, timeout time.Duration) error {
	c := command{Cmd: cmdStop, Signal: spec.SignalName(sig), TimeoutMs: timeout.Milliseconds()}
	p.background(func(sent func()) {
		ch, seq, err := p.send(c, false)
		sent()
		if err == nil {
			// The keeper answers at once; the exit may take the whole
			// timeout, after which the keeper SIGKILLs the group.
			_, err = p.await(ch, seq, c.Cmd, timeout+p.s.cfg.CallTimeout)
		}
		if err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.log.Warn("stopping the app", "signal", c.Signal, "err", err)
		}
		if errors.Is(err, errNoAnswer) {
			p.abandon()
		}
	})
	return nil
}

// abandon gives up on a keeper that took a stop and, by the end of its
// kill_timeout and CallTimeout more, had neither answered nor reported
// the exit: it cannot do its job. It is killed and the connection
// dropped; the reader then finds it gone and kills the app's group (an
// exit with Reason "keeper lost"), so the stop ends.
func (p *process) abandon() {
	p.mu.Lock()
	gone := p.exited || p.detached || p.released
	p.mu.Unlock()
	if gone {
		return
	}
	p.log.Error("the keeper neither answered a stop nor reported the exit; killing it and its app", "keeper_pid", p.st.KeeperPid)
	killAndWait(proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart}, false, p.log)
	p.mu.Lock()
	p.brokenLocked()
	p.mu.Unlock()
}

// Release lets the keeper forget the exit and go. It does nothing before
// EventExit was queued, and returns at once: the command is written from
// a goroutine of its own.
func (p *process) Release() {
	p.background(func(sent func()) {
		defer sent()
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.exited || p.released {
			return
		}
		p.released = true
		if p.conn != nil {
			p.sendReleaseLocked()
		}
	})
}

// background runs f in a goroutine of its own; f calls sent once its
// command is written (or will not be). detachNow lets those writes finish
// before it drops the connection, and waits for the goroutines; after
// detachNow, f does not run.
func (p *process) background(f func(sent func())) {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.bgClosed {
		return
	}
	p.bg.Add(1)
	p.writes.Add(1)
	go func() {
		defer p.bg.Done()
		var once sync.Once
		sent := func() { once.Do(p.writes.Done) }
		defer sent()
		f(sent)
	}()
}

func (p *process) sendReleaseLocked() {
	p.seq++
	if err := p.writeLocked(command{Cmd: cmdRelease, Seq: p.seq}); err != nil {
		p.log.Warn("releasing keeper", "err", err)
	}
}

// call sends a command and waits for its reply, over a reconnection if
// one is under way or the write finds the connection broken (a command
// whose write failed did not reach the keeper, so it is sent again). A
// reply with code "exited" is os.ErrProcessDone, and so is any command
// once the exit was queued — unless afterExit: a keeper answers until it
// is released. The reply's descriptors, if any, are the caller's.
func (p *process) call(c command, afterExit bool) (message, error) {
	ch, seq, err := p.send(c, afterExit)
	if err != nil {
		return message{}, err
	}
	return p.await(ch, seq, c.Cmd, p.s.cfg.CallTimeout)
}

// send writes a command (see call) and returns where its reply comes.
func (p *process) send(c command, afterExit bool) (chan message, int, error) {
	t := time.NewTimer(p.s.cfg.CallTimeout)
	defer t.Stop()
	for attempt := 0; ; attempt++ {
		p.mu.Lock()
		for p.conn == nil && (afterExit || !p.exited) && p.reconnected != nil {
			wait := p.reconnected
			p.mu.Unlock()
			select {
			case <-wait:
			case <-t.C:
				return nil, 0, errNotConnected
			case <-p.detach:
				return nil, 0, errNotConnected
			}
			p.mu.Lock()
		}
		if p.exited && !afterExit {
			p.mu.Unlock()
			return nil, 0, os.ErrProcessDone
		}
		if p.conn == nil {
			p.mu.Unlock()
			return nil, 0, errNotConnected
		}
		p.seq++
		c.Seq = p.seq
		ch := make(chan message, 1)
		p.pending[c.Seq] = ch
		err := p.writeLocked(c)
		if err == nil {
			p.mu.Unlock()
			return ch, c.Seq, nil
		}
		delete(p.pending, c.Seq)
		p.brokenLocked()
		p.mu.Unlock()
		if attempt > 0 {
			return nil, 0, err
		}
	}
}

// await waits for the reply to command seq.
func (p *process) await(ch chan message, seq int, cmd string, within time.Duration) (message, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case m, ok := <-ch:
		switch {
		case !ok:
			return message{}, errors.New("the connection to the keeper ended")
		case m.Code == codeExited:
			return m, os.ErrProcessDone
		case m.Error != "":
			return m, errors.New(m.Error)
		}
		return m, nil
	case <-t.C:
		p.mu.Lock()
		delete(p.pending, seq)
		p.mu.Unlock()
		select {
		case m := <-ch: // it came just now: drop it
			closeFiles(m.files)
		default:
		}
		return message{}, fmt.Errorf("%w %s within %s", errNoAnswer, cmd, within)
	}
}

// brokenLocked drops the connection: the reader notices and reconnects
// (or finds the keeper gone), and commands wait for that. p.mu must be
// held.
func (p *process) brokenLocked() {
	p.closeConnLocked()
	if p.reconnected == nil && !p.detached && !p.released {
		p.reconnected = make(chan struct{})
	}
}

// closeConnLocked closes the connection, both the daemon's end for
// writes and the poller's for reads: the keeper sees the end only once
// both are closed. The poller tells the end to the reading. p.mu is held.
func (p *process) closeConnLocked() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	if p.reads != nil {
		p.s.wires.remove(p.reads)
		p.reads = nil
	}
}

// writeLocked writes one command line, with c.files as SCM_RIGHTS. p.mu
// must be held.
func (p *process) writeLocked(c command) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	p.conn.SetWriteDeadline(time.Now().Add(p.s.cfg.CallTimeout))
	return writeWithFiles(p.conn, append(b, '\n'), c.files)
}

// sockets asks the keeper for the listening sockets it holds (the app's
// `listen` sockets and those a daemon bound for it), also after the app
// exited. The files are the caller's.
func (p *process) sockets() ([]Socket, error) {
	m, err := p.call(command{Cmd: cmdSockets}, true)
	if err != nil {
		closeFiles(m.files)
		return nil, err
	}
	if len(m.files) != len(m.Sockets) {
		closeFiles(m.files)
		return nil, fmt.Errorf("the keeper named %d sockets and sent %d", len(m.Sockets), len(m.files))
	}
	out := make([]Socket, len(m.files))
	for i, f := range m.files {
		out[i] = Socket{Name: m.Sockets[i].Name, Kind: m.Sockets[i].Kind, Slot: p.st.Instance, File: f}
	}
	return out, nil
}

// answerListen answers a keeper's listen request with the daemon's
// socket for it (SpawnerConfig.ListenFor), once any adoption of
// survivors' sockets is done. An answer that cannot be delivered now is
// dropped: the keeper asks again when a daemon connects.
func (p *process) answerListen(req ListenRequest) {
	defer p.wg.Done()
	c := command{Cmd: cmdSocket, ID: req.ID}
	if p.s.cfg.ListenFor == nil {
		c.Error, c.Code = "this keel daemon does not bind sockets for apps", "EKEEL"
	} else {
		if !p.s.adopted(p.detach) {
			return
		}
		f, name, err := p.s.cfg.ListenFor(p.st.App, p.st.Instance, req)
		switch {
		case err != nil:
			c.Error, c.Code = err.Error(), errnoName(err)
			p.log.Warn("no socket for the app's listen", "host", req.Host, "port", req.Port, "err", err)
		case f == nil || name == "":
			c.Error, c.Code = "the daemon has no socket for this listen", "EKEEL"
		default:
			c.Name, c.FDs, c.files = name, 1, []*os.File{f}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil || p.exited || p.detached {
		return
	}
	p.seq++
	c.Seq = p.seq
	if err := p.writeLocked(c); err != nil {
		p.log.Warn("answering the keeper's listen request", "err", err)
		p.brokenLocked()
	}
}

// errnoName is the errno err wraps, by name ("EADDRINUSE"), or "EKEEL".
func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
	}
	return "EKEEL"
}

// read reads the keeper's lines in a goroutine of its own (when the
// wirePoller cannot), reconnecting while the keeper lives; see ended.
func (p *process) read(rd *wireReader) {
	for {
		err := p.readConn(rd)
		rd.close()
		var conn *net.UnixConn
		if conn, rd = p.ended(err); conn == nil {
			p.readingEnded()
			return
		}
	}
}

// ended handles the end of the connection to the keeper (by err):
// it fails the commands waiting for replies, and reconnects while the
// keeper lives, returning the new connection (already p.conn) and what
// was read from it. When the keeper is gone before the exit, it kills
// the app's group and queues an exit with Reason "keeper lost"; then, or
// once the process is detached or released, it returns no connection.
func (p *process) ended(err error) (*net.UnixConn, *wireReader) {
	p.mu.Lock()
	p.brokenLocked()
	for seq, ch := range p.pending {
		close(ch)
		delete(p.pending, seq)
	}
	done := p.detached || p.released
	p.mu.Unlock()
	if done {
		return nil, nil
	}
	var conn *net.UnixConn
	var rd *wireReader
	var st *State
	if p.redials < maxRedials {
		p.redials++
		conn, rd, st, err = connect(p.paths.sock)
	}
	if conn == nil {
		p.lost(err)
		return nil, nil
	}
	p.log.Info("reconnected to keeper")
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.detached {
		rd.close()
		conn.Close()
		return nil, nil
	}
	p.conn = conn
	if p.reconnected != nil {
		close(p.reconnected)
		p.reconnected = nil
	}
	p.applyLocked(st)
	if p.released {
		p.sendReleaseLocked()
	}
	return conn, rd
}

// readingEnded is the end of the reading, for good: commands stop
// waiting for a reconnection, and the Spawner forgets the process.
func (p *process) readingEnded() {
	p.mu.Lock()
	if p.reconnected != nil {
		close(p.reconnected)
		p.reconnected = nil
	}
	p.mu.Unlock()
	p.s.remove(p)
	p.wg.Done()
}

func (p *process) readConn(rd *wireReader) error {
	for {
		line, err := rd.next()
		if err != nil {
			return err
		}
		m, err := parseMessage(line, rd)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.messageLocked(m)
		p.mu.Unlock()
	}
}

// parseMessage decodes one line from a keeper and takes the descriptors
// it announces; only a reply keeps them.
func parseMessage(line []byte, rd *wireReader) (message, error) {
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("a line from the keeper: %w", err)
	}
	var err error
	if m.files, err = rd.take(m.FDs); err != nil {
		return m, err
	}
	if m.Type != msgReply {
		closeFiles(m.files) // only a reply carries descriptors
		m.files = nil
	}
	return m, nil
}

// messageLocked applies one message from the keeper. p.mu is held.
func (p *process) messageLocked(m message) {
	switch m.Type {
	case msgHello:
		if m.State != nil {
			p.applyLocked(m.State)
		}
	case msgReady:
		p.readyLocked()
	case msgStatus:
		p.statusLocked(m.Text)
	case msgStopping:
		p.stoppingLocked(m.Crash, m.Text)
	case msgExit:
		if m.Exit != nil {
			p.exitLocked(*m.Exit)
		}
	case msgReply:
		if ch, ok := p.pending[m.Seq]; ok {
			delete(p.pending, m.Seq)
			ch <- m
		} else {
			closeFiles(m.files)
		}
	case msgListen:
		if m.Listen != nil && !p.detached {
			p.wg.Add(1)
			go p.answerListen(*m.Listen)
		}
	default:
		p.log.Warn("unknown message from keeper", "type", m.Type)
	}
}

// lost handles a keeper that is gone. If the exit was already queued there
// is nothing to do; otherwise the app must not live on without its keeper.
func (p *process) lost(cause error) {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited {
		p.s.reclaim(p.paths, false)
		return
	}
	keeper := proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart}
	if keeper.Running() {
		// It runs but cannot be reached: it cannot do its job either.
		p.log.Error("the keeper does not answer; killing it and its app", "keeper_pid", p.st.KeeperPid, "err", cause)
		killAndWait(keeper, false, p.log)
	} else {
		p.log.Error("the keeper died; killing its app", "keeper_pid", p.st.KeeperPid, "err", cause)
	}
	app := proc.Identity{Pid: p.st.Pid, Start: p.st.PidStart}
	ex := spec.Exit{At: time.Now(), Reason: ReasonKeeperLost}
	if app.Running() {
		sig := spec.SignalName(syscall.SIGKILL)
		ex.Signal = &sig
	}
	killAndWait(app, true, p.log)
	p.s.reclaim(p.paths, false)
	p.mu.Lock()
	p.exitLocked(ex)
	p.mu.Unlock()
}

// applyLocked queues what a hello says that was not queued yet.
func (p *process) applyLocked(st *State) {
	if st.StopRequested {
		// An earlier daemon asked it to stop: it is going down, and so
		// takes no new connections (the supervisor steers by this).
		p.stoppingLocked(false, "")
	}
	if st.Ready {
		p.readyLocked()
	}
	if st.Status != "" {
		p.statusLocked(st.Status)
	}
	if st.Stopping {
		p.stoppingLocked(st.Crashing, st.CrashText)
	}
	if st.Exit != nil {
		p.exitLocked(*st.Exit)
	}
}

func (p *process) readyLocked() {
	if !p.ready && !p.exited {
		p.ready = true
		p.pushLocked(supervisor.Event{Kind: supervisor.EventReady})
	}
}

func (p *process) statusLocked(text string) {
	if text == p.status || p.exited {
		return
	}
	p.status = text
	if n := len(p.queue); n > 0 && p.queue[n-1].Kind == supervisor.EventStatus {
		p.queue[n-1].Text = text
		return
	}
	p.pushLocked(supervisor.Event{Kind: supervisor.EventStatus, Text: text})
}

// stoppingLocked queues EventStopping, or EventCrashing with the crash's
// text for a graceful crash (which may follow a plain stopping).
func (p *process) stoppingLocked(crash bool, text string) {
	if p.exited || p.crashing || p.stopping && !crash {
		return
	}
	p.stopping = true
	if crash {
		p.crashing = true
		p.pushLocked(supervisor.Event{Kind: supervisor.EventCrashing, Text: text})
		return
	}
	p.pushLocked(supervisor.Event{Kind: supervisor.EventStopping})
}

func (p *process) exitLocked(ex spec.Exit) {
	if !p.exited {
		p.exited = true
		p.pushLocked(supervisor.Event{Kind: supervisor.EventExit, Exit: ex})
	}
}

func (p *process) pushLocked(ev supervisor.Event) {
	if p.notify != nil {
		p.notify(ev)
		return
	}
	p.queue = append(p.queue, ev)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// pump hands queued events to Events; after the exit it closes Events.
func (p *process) pump() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.mu.Unlock()
			select {
			case <-p.wake:
				continue
			case <-p.detach:
				return
			}
		}
		ev := p.queue[0]
		p.queue = p.queue[1:]
		p.mu.Unlock()
		select {
		case p.events <- ev:
		case <-p.detach:
			return
		}
		if ev.Kind == supervisor.EventExit {
			close(p.events)
			return
		}
	}
}

// detachNow drops the connection without telling the keeper anything and
// waits for the process's goroutines.
// Commands already given (Stop, Release) are written first.
func (p *process) detachNow() {
	p.bgMu.Lock()
	p.bgClosed = true
	p.bgMu.Unlock()
	p.mu.Lock()
	if !p.detached {
		p.detached = true
		close(p.detach)
	}
	p.mu.Unlock()
	p.writes.Wait()
	p.mu.Lock()
	p.closeConnLocked()
	p.mu.Unlock()
	p.bg.Wait()
	p.wg.Wait()
}
