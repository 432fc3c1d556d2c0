package keeper

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/procs"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

// ReasonKeeperLost is the Exit.Reason of a process whose keeper died: the
// daemon killed the app's process group itself.
const ReasonKeeperLost = "keeper lost"

const (
	// handshakeTimeout bounds a keeper's start when the caller's context
	// has no earlier deadline (SpawnerConfig.StartTimeout).
	handshakeTimeout = 15 * time.Second
	// hostStartFactor is how many times StartTimeout an instance gets that
	// its app's running keeper process starts. That keeper is alive, but
	// it captures every other instance's output on one P: with a thousand
	// instances logging flat out on two cores, one more start took it
	// over 15 s (bench/cmd/scale's writers), and the instance failed.
	hostStartFactor = 4
	// helloTimeout bounds connecting to a keeper and reading its hello.
	helloTimeout = 5 * time.Second
	// goneTimeout bounds the wait for a killed process to die.
	goneTimeout = 5 * time.Second
	// logTail is how much of a dead keeper's log is kept in the daemon's.
	logTail = 2048
)

// SpawnerConfig configures a Spawner.
type SpawnerConfig struct {
	// Home is KEEL_HOME; keepers live in Home/run.
	Home string
	// Exe is the keel binary to run as "Exe __keeper" (tests use their own
	// binary); "" means os.Executable().
	Exe string
	// Logger receives what happens to keepers; nil discards it.
	Logger *slog.Logger
	// Listeners returns the listening sockets (and their LISTEN_FDNAMES
	// names) that the given instance of app inherits; nil or no files:
	// none. The files stay the caller's: Spawn neither keeps nor closes
	// them.
	Listeners func(app *spec.App, instance int) ([]*os.File, []string, error)
	// Env is KEY=VALUE entries for every app, over the daemon's own
	// environment and under the app's env.
	Env []string
	// NoStandby turns off the standby keeper: by default a Spawner keeps
	// one keeper started ahead of time (from the first Spawn on), so that
	// a respawn does not wait for a process to start.
	NoStandby bool
	// ListenFor yields the socket for a keeper's listen request: a Node
	// app in cluster mode listening on a port, which the daemon binds
	// once per app and address and shares with every instance. It returns
	// the socket (which stays the caller's, open for as long as the app
	// may ask again) and a name for it that is stable across restarts of
	// the daemon (AdoptSockets hands it back under that name), or an
	// error; an error that wraps a syscall.Errno reaches the app's server
	// with that code ("EADDRINUSE"). Nil: such requests are refused. It is
	// called from the Spawner's goroutines, never while Survivors hands
	// over sockets.
	ListenFor func(app string, instance int, req ListenRequest) (*os.File, string, error)
	// AdoptSockets receives, during Survivors and before it returns, the
	// listening sockets each adopted keeper holds (its app's `listen`
	// sockets and those ListenFor gave it), so that a new daemon shares
	// the sockets its surviving instances hold instead of binding their
	// ports again. It owns the files. Called once per keeper that
	// answered, so the same socket may come several times.
	AdoptSockets func(app string, socks []Socket)
	// AdoptionDone is called once Survivors has handed every survivor's
	// sockets to AdoptSockets.
	AdoptionDone func()
	// StartCmd starts a keeper process and returns its wait; nil:
	// cmd.Start and cmd.Wait. (`keel run`'s reaper must not take it.)
	StartCmd func(*exec.Cmd) (wait func() error, err error)
	// Cgroup is a cgroup v2 directory this process may write to, with the
	// controllers it wants enabled in its subtree_control; each keeper
	// makes the group Cgroup/keel-<keeper id> for its app, which is born
	// in it and whose every descendant cgroup.kill ends at the exit. "":
	// no cgroup per instance (the keeper's subreaper still ends them).
	Cgroup string
	// CallTimeout bounds a command's round trip to a keeper (and the
	// write of a command); 0 means 5 s.
	CallTimeout time.Duration
	// StartTimeout bounds the start of a keeper process, up to its
	// handshake; 0 means 15 s. One more instance in the app's running
	// keeper process gets hostStartFactor times as long.
	StartTimeout time.Duration
}

// Spawner starts keepers and adopts those a previous daemon left; it is
// keel's supervisor.Spawner. Its methods are safe for concurrent use.
type Spawner struct {
	cfg SpawnerConfig
	log *slog.Logger
	// wires reads every keeper connection with one goroutine; nil: each
	// process reads its own.
	wires *wirePoller
	// exits hears, at SIGCHLD, of the exits of the keepers this Spawner
	// started (unless StartCmd does), so that no keeper holds a thread
	// blocked in wait4 in the daemon. Its goroutine runs while keepers
	// are watched or the Spawner is open (watching, watcher: under mu).
	exits    *proc.ExitWatcher
	watching int
	watcher  bool
	exitWake chan struct{} // capacity 1: the watcher looks again (an exit, or Close)

	wg sync.WaitGroup // refill goroutines
	// starts holds a token per Spawn under way (bounded).
	starts chan struct{}
	// trim returns to the system, once spawns pause, the heap a burst of
	// them left behind (about 1 MB per 200 in the daemon).
	trim *time.Timer

	mu    sync.Mutex
	procs map[string]*process // by keeper id
	// hosts holds, by app name, the id (Config.Host) of the keeper
	// process this Spawner started for the app, which takes its further
	// instances. One that has ended is found out at the next Spawn.
	hosts map[string]string
	// appLocks serialise, per app, the start of a new host.
	appLocks  map[string]*sync.Mutex
	starting  map[string]bool // ids of keepers started but not yet serving
	standby   *keeperProc     // a keeper waiting for a config, or nil
	refilling bool            // a standby is on its way
	closed    bool
	// adopting is open while Survivors hands the survivors' sockets over
	// (nil otherwise): listen requests are answered once it is closed, so
	// none gets a socket bound anew for a port a survivor holds.
	adopting chan struct{}
}

var _ supervisor.Spawner = (*Spawner)(nil)

// NewSpawner returns a Spawner for cfg.Home.
func NewSpawner(cfg SpawnerConfig) *Spawner {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = defaultCallTimeout
	}
	s := &Spawner{cfg: cfg, log: log, procs: map[string]*process{}, starting: map[string]bool{},
		hosts: map[string]string{}, appLocks: map[string]*sync.Mutex{},
		starts: make(chan struct{}, max(4, 4*runtime.NumCPU())),
		trim:   time.AfterFunc(time.Hour, debug.FreeOSMemory),
		exits:  proc.NewExitWatcher(), exitWake: make(chan struct{}, 1)}
	s.trim.Stop()
	if w, err := newWirePoller(); err != nil {
		log.Warn("reading each keeper with a goroutine of its own", "err", err)
	} else {
		s.wires = w
	}
	return s
}

// Spawn starts a keeper for one instance and returns once the app runs
// (Pid is set) — or with the reason it could not start (a missing program,
// a bad cwd, …), in which case nothing is left running. ctx bounds the
// start. A standby keeper, started ahead of time, takes the request when
// there is one, so the keeper's own start costs nothing here.
func (s *Spawner) Spawn(ctx context.Context, req supervisor.SpawnRequest) (supervisor.Process, error) {
	if req.App == nil {
		return nil, errors.New("spawn: no app")
	}
	var files []*os.File
	var names []string
	if s.cfg.Listeners != nil {
		var err error
		if files, names, err = s.cfg.Listeners(req.App, req.Instance); err != nil {
			return nil, fmt.Errorf("listening sockets: %w", err)
		}
		if len(files) != len(names) {
			return nil, fmt.Errorf("listening sockets: %d files, %d names", len(files), len(names))
		}
	}
	// A few starts at a time: a thousand keepers starting at once on a
	// few cores would each take longer than handshakeTimeout.
	select {
	case s.starts <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("spawn: %w", ctx.Err())
	}
	defer func() {
		<-s.starts
		s.mu.Lock()
		if !s.closed {
			s.trim.Reset(trimAfter)
		}
		s.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}

	id := newID()
	s.mu.Lock()
	s.starting[id] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.starting, id)
		s.mu.Unlock()
	}()
	cfg := &Config{
		ID: id, Home: s.cfg.Home, App: req.App, Instance: req.Instance, Restarts: req.Restarts,
		Env: s.cfg.Env, ListenNames: names, NodeIPC: wantsNodeIPC(req.App), Cgroup: s.cfg.Cgroup,
	}
	name := req.App.Name
	lock := s.appLock(name)
	lock.Lock()
	for {
		s.mu.Lock()
		host := s.hosts[name]
		s.mu.Unlock()
		if host == "" {
			break
		}
		// The app's keeper process takes the instance; instances of one
		// app start side by side there.
		lock.Unlock()
		cfg.Host = host
		p, err := s.spawnInHost(ctx, cfg, files, s.startDeadline(ctx, hostStartFactor))
		if !errors.Is(err, errHostGone) {
			return p, err
		}
		s.log.Info("the app's keeper has ended; starting another", "app", name, "keeper", host, "err", err)
		lock.Lock()
		s.mu.Lock()
		if s.hosts[name] == host {
			delete(s.hosts, name)
		}
		s.mu.Unlock()
	}
	// No keeper process for the app: this instance's becomes it. Other
	// instances of the app wait for it rather than start their own.
	defer lock.Unlock()
	deadline := s.startDeadline(ctx, 1)

	k := s.takeStandby()
	if k != nil {
		cfg.Host = k.id
		if err := s.sendConfig(ctx, k.config, cfg, files, deadline); err != nil {
			// The standby died while it waited: start afresh.
			s.log.Warn("standby keeper unusable", "err", err)
			k.discard(s.log)
			s.done(k)
			k = nil
		}
	}
	if k == nil {
		var err error
		if k, err = s.startKeeper(); err != nil {
			return nil, err
		}
		cfg.Host = k.id
		if err := s.sendConfig(ctx, k.config, cfg, files, deadline); err != nil {
			s.abort(k, id)
			s.done(k)
			return nil, err
		}
	}
	defer s.done(k)

	pp := pathsFor(s.cfg.Home, id)
	k.config.Close()
	if _, err := s.handshake(ctx, k.hs, deadline, hostPathsFor(s.cfg.Home, k.id).log); err != nil {
		k.hs.Close()
		s.abort(k, id)
		return nil, err
	}
	k.hs.Close()
	conn, rd, st, err := connectBy(pp.sock, helloDeadline(deadline))
	if err != nil {
		s.abort(k, id)
		return nil, fmt.Errorf("connecting to keeper: %w", err)
	}
	p := newProcess(s, pp, conn, rd, st)
	if !s.add(p) {
		// Closed meanwhile: the process runs on, for the next daemon.
		p.detachNow()
		return nil, errors.New("spawn: the spawner is closed")
	}
	s.mu.Lock()
	s.hosts[name] = k.id
	s.mu.Unlock()
	return p, nil
}

// errNoHandshake is a keeper that closed its end without a handshake.
var errNoHandshake = errors.New("no handshake")

// errHostGone is a spawn request the app's keeper process did not take:
// it has ended (or is ending), and started nothing.
var errHostGone = errors.New("the app's keeper has ended")

// startDeadline is when a start that gets factor times StartTimeout from
// now gives up, or ctx's deadline if that comes first.
func (s *Spawner) startDeadline(ctx context.Context, factor int) time.Time {
	d := s.cfg.StartTimeout
	if d <= 0 {
		d = handshakeTimeout
	}
	deadline := time.Now().Add(time.Duration(factor) * d)
	if cd, ok := ctx.Deadline(); ok && cd.Before(deadline) {
		deadline = cd
	}
	return deadline
}

// spawnInHost asks the keeper process cfg.Host for one more instance.
func (s *Spawner) spawnInHost(ctx context.Context, cfg *Config, files []*os.File, deadline time.Time) (*process, error) {
	hp := hostPathsFor(s.cfg.Home, cfg.Host)
	c, err := dialUnix(hp.sock)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errHostGone, err)
	}
	defer c.Close()
	if err := s.sendConfig(ctx, c, cfg, files, deadline); err != nil {
		// A config cut short is refused as malformed: nothing started.
		return nil, fmt.Errorf("%w: %w", errHostGone, err)
	}
	pp := pathsFor(s.cfg.Home, cfg.ID)
	started, err := s.handshake(ctx, c, deadline, hp.log)
	if err != nil {
		if errors.Is(err, errNoHandshake) {
			return nil, fmt.Errorf("%w: %w", errHostGone, err)
		}
		if !started {
			return nil, err
		}
		// No answer in time: the instance may run after all, unknown to
		// anyone but its keeper.
		c.Close()
		s.discard(pp)
		return nil, err
	}
	conn, rd, st, err := connectBy(pp.sock, helloDeadline(deadline))
	if err != nil {
		s.discard(pp)
		return nil, fmt.Errorf("connecting to keeper: %w", err)
	}
	p := newProcess(s, pp, conn, rd, st)
	if !s.add(p) {
		p.detachNow()
		return nil, errors.New("spawn: the spawner is closed")
	}
	return p, nil
}

// discard ends an instance whose spawn failed after its keeper took the
// request: if it runs, it is killed and released, so its keeper forgets
// it.
func (s *Spawner) discard(pp paths) {
	conn, rd, st, err := connect(pp.sock)
	if err != nil {
		return // it never started, or its files were removed
	}
	p := newProcess(s, pp, conn, rd, st)
	defer p.detachNow()
	p.Stop(syscall.SIGKILL, 0)
	t := time.NewTimer(goneTimeout + s.cfg.CallTimeout)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-p.Events():
			if !ok {
				return
			}
			if ev.Kind == supervisor.EventExit {
				p.Release()
				return
			}
		case <-t.C:
			s.log.Warn("a discarded instance did not exit", "id", st.ID, "pid", st.Pid)
			return
		}
	}
}

// appLock is the lock that serialises the start of app's keeper process.
func (s *Spawner) appLock(app string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.appLocks[app]
	if l == nil {
		l = &sync.Mutex{}
		s.appLocks[app] = l
	}
	return l
}

// keeperProc is a started keeper that has not been told what to run yet,
// or is being told.
type keeperProc struct {
	id     string
	cmd    *exec.Cmd
	config *net.UnixConn // our end of the keeper's stdin
	hs     *os.File      // the read end of the keeper's stdout
	reaped chan struct{} // closed once the keeper was waited for
}

// startKeeper starts a keeper that waits for its config. Its id is
// registered as starting, so Survivors leaves it alone; s.done(k) ends
// that.
func (s *Spawner) startKeeper() (*keeperProc, error) {
	exe := s.cfg.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding the keel binary: %w", err)
		}
	}
	if err := ensureDirs(s.cfg.Home); err != nil {
		return nil, err
	}
	// stdin is a socket, so the listen fds can travel with the config.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("keeper config socket: %w", os.NewSyscallError("socketpair", err))
	}
	theirs := os.NewFile(uintptr(fds[1]), "keeper-config")
	defer theirs.Close()
	oursF := os.NewFile(uintptr(fds[0]), "keeper-config")
	fc, err := net.FileConn(oursF)
	oursF.Close()
	if err != nil {
		return nil, fmt.Errorf("keeper config socket: %w", err)
	}
	ours := fc.(*net.UnixConn)
	hsR, hsW, err := os.Pipe()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("keeper handshake pipe: %w", err)
	}
	defer hsW.Close()
	k := &keeperProc{
		id:     newID(),
		config: ours,
		hs:     hsR,
		reaped: make(chan struct{}),
		cmd: &exec.Cmd{
			Path:        exe,
			Args:        []string{exe, KeeperArg},
			Env:         keeperEnv(os.Environ()),
			Stdin:       theirs,
			Stdout:      hsW,
			SysProcAttr: &syscall.SysProcAttr{Setsid: true},
		},
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ours.Close()
		hsR.Close()
		return nil, errors.New("spawn: the spawner is closed")
	}
	s.starting[k.id] = true
	s.mu.Unlock()
	wait := k.cmd.Wait
	if s.cfg.StartCmd != nil {
		wait, err = s.cfg.StartCmd(k.cmd)
	} else {
		err = k.cmd.Start()
	}
	if err != nil {
		ours.Close()
		hsR.Close()
		s.done(k)
		return nil, fmt.Errorf("starting keeper: %w", err)
	}
	pid := k.cmd.Process.Pid
	if s.cfg.StartCmd != nil {
		go s.reap(pid, wait, k.reaped)
	} else {
		s.watchKeeper(pid, func() { go s.reap(pid, wait, k.reaped) })
	}
	return k, nil
}

// watchKeeper calls exited once the keeper pid has exited (unreaped).
func (s *Spawner) watchKeeper(pid int, exited func()) {
	s.mu.Lock()
	s.watching++
	start := !s.watcher
	s.watcher = true
	s.mu.Unlock()
	if start {
		subscribed := make(chan struct{})
		go s.watchExits(subscribed)
		<-subscribed // a SIGCHLD from now on is heard
	}
	s.exits.Watch(pid, func() {
		s.mu.Lock()
		s.watching--
		s.mu.Unlock()
		s.wakeWatcher()
		exited()
	})
}

// wakeWatcher has the watcher look at the Spawner's state again.
func (s *Spawner) wakeWatcher() {
	select {
	case s.exitWake <- struct{}{}:
	default:
	}
}

// watchExits is the goroutine of exits: it checks the watched keepers at
// each SIGCHLD, and ends once the Spawner is closed and none is left.
func (s *Spawner) watchExits(subscribed chan<- struct{}) {
	sigchld := make(chan os.Signal, 16)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	close(subscribed)
	for {
		s.exits.Check()
		s.mu.Lock()
		if s.closed && s.watching == 0 {
			s.watcher = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		select {
		case <-sigchld:
		case <-s.exitWake:
		}
	}
}

// done forgets that k is starting.
func (s *Spawner) done(k *keeperProc) {
	s.mu.Lock()
	delete(s.starting, k.id)
	s.mu.Unlock()
}

// discard ends a keeper that never got a config: at EOF on its stdin it
// exits, having created nothing.
func (k *keeperProc) discard(log *slog.Logger) {
	k.config.Close()
	k.hs.Close()
	t := time.NewTimer(goneTimeout)
	defer t.Stop()
	select {
	case <-k.reaped:
	case <-t.C:
		log.Error("an unused keeper did not exit; killing it", "pid", k.cmd.Process.Pid)
		_ = k.cmd.Process.Kill()
	}
}

// takeStandby returns the standby keeper, if any, and starts the next.
func (s *Spawner) takeStandby() *keeperProc {
	s.mu.Lock()
	k := s.standby
	s.standby = nil
	s.mu.Unlock()
	s.refill()
	return k
}

// refill starts a standby keeper in the background unless there is one
// (or one is on its way).
func (s *Spawner) refill() {
	s.mu.Lock()
	if s.cfg.NoStandby || s.closed || s.refilling || s.standby != nil {
		s.mu.Unlock()
		return
	}
	s.refilling = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		k, err := s.startKeeper()
		if err != nil {
			s.log.Warn("starting a standby keeper", "err", err)
		}
		s.mu.Lock()
		s.refilling = false
		if k != nil && !s.closed {
			s.standby = k
			k = nil
		}
		s.mu.Unlock()
		if k != nil {
			k.discard(s.log)
			s.done(k)
		}
	}()
}

// sendConfig tells a keeper what to run: cfg as JSON with the listen fds
// as SCM_RIGHTS, then EOF.
func (s *Spawner) sendConfig(ctx context.Context, conn *net.UnixConn, cfg *Config, files []*os.File, deadline time.Time) error {
	body, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encoding keeper config: %w", err)
	}
	names := cfg.ListenNames
	var rights []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			// Our own duplicates: f's descriptor stays f's business.
			if fds[i], err = dupFd(f); err != nil {
				for _, fd := range fds[:i] {
					unix.Close(fd)
				}
				return fmt.Errorf("passing listen fd %s: %w", names[i], err)
			}
		}
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		rights = unix.UnixRights(fds...)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	conn.SetWriteDeadline(deadline)
	n, _, err := conn.WriteMsgUnix(body, rights, nil)
	if err == nil && n < len(body) {
		_, err = conn.Write(body[n:])
	}
	if err == nil {
		err = conn.CloseWrite()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("sending the keeper its config: %w", err)
	}
	return nil
}

func dupFd(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(raw uintptr) {
		fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

// deadliner is a handshake's source: the pipe of a keeper's stdout, or a
// spawn connection.
type deadliner interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// handshake reads the keeper's verdict. started reports, for an error,
// whether the keeper may have started the app regardless (it got the
// config, but no answer came in time).
func (s *Spawner) handshake(ctx context.Context, r deadliner, deadline time.Time, keeperLog string) (started bool, err error) {
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	r.SetReadDeadline(deadline)
	line, err := bufio.NewReader(r).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return true, fmt.Errorf("starting keeper: %w", ctx.Err())
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return false, fmt.Errorf("%w: the keeper exited before it started the app: %s", errNoHandshake, tail(keeperLog))
		}
		return true, fmt.Errorf("waiting for the keeper: %w", err)
	}
	var hs handshake
	if err := json.Unmarshal(line, &hs); err != nil {
		return true, fmt.Errorf("keeper handshake %q: %w", line, err)
	}
	if hs.Error != "" {
		return false, errors.New(hs.Error)
	}
	if !hs.OK || hs.State == nil {
		return true, fmt.Errorf("keeper handshake %q: neither ok nor an error", line)
	}
	return true, nil
}

// abort ends a keeper whose start failed, and whatever it started as
// instance id.
func (s *Spawner) abort(k *keeperProc, id string) {
	k.config.Close()
	k.hs.Close()
	_ = k.cmd.Process.Kill()
	t := time.NewTimer(goneTimeout)
	defer t.Stop()
	select {
	case <-k.reaped:
	case <-t.C:
		s.log.Error("keeper did not die after SIGKILL", "pid", k.cmd.Process.Pid)
	}
	s.reclaim(pathsFor(s.cfg.Home, id), false)
	if err := hostPathsFor(s.cfg.Home, k.id).remove(); err != nil {
		s.log.Warn("removing keeper files", "err", err)
	}
}

// reap is the one waiter of a keeper this Spawner started. The keeper's
// status matters little (its connection says everything), but it must not
// linger as a zombie. ECHILD is fine: a reaper of the whole process
// (`keel run` as PID 1) may have been first unless StartCmd is its.
func (s *Spawner) reap(pid int, wait func() error, done chan<- struct{}) {
	defer close(done)
	err := wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		s.log.Warn("keeper exited", "pid", pid, "status", ee.ProcessState.String())
	case errors.Is(err, syscall.ECHILD):
	default:
		s.log.Warn("waiting for keeper", "pid", pid, "err", err)
	}
}

func (s *Spawner) add(p *process) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.procs[p.st.ID] = p
	return true
}

func (s *Spawner) remove(p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procs[p.st.ID] == p {
		delete(s.procs, p.st.ID)
	}
}

// Survivors adopts every keeper in Home/run that this Spawner does not
// already hold: each live keeper answers with its state, including an
// exit that happened while no daemon was connected (delivered as the
// process's EventExit). For a keeper that is dead, the app's process
// group is SIGKILLed if the recorded app still runs, and the keeper's
// files are removed. Every adopted keeper's listening sockets go to
// AdoptSockets before Survivors returns. It returns an error only if the
// run directory cannot be read.
func (s *Spawner) Survivors(ctx context.Context) ([]supervisor.Survivor, error) {
	gate := make(chan struct{})
	s.mu.Lock()
	if s.adopting != nil {
		s.mu.Unlock()
		return nil, errors.New("survivors: already being adopted")
	}
	s.adopting = gate
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.adopting = nil
		s.mu.Unlock()
		close(gate)
	}()
	out, err := s.survivors(ctx)
	if s.cfg.AdoptSockets != nil {
		for _, sv := range out {
			p := sv.Process.(*process)
			socks, serr := p.sockets()
			if serr != nil {
				p.log.Warn("the keeper did not hand back its sockets", "err", serr)
				continue
			}
			if len(socks) > 0 {
				s.cfg.AdoptSockets(sv.App, socks)
			}
		}
	}
	if s.cfg.AdoptionDone != nil {
		s.cfg.AdoptionDone()
	}
	return out, err
}

func (s *Spawner) survivors(ctx context.Context) ([]supervisor.Survivor, error) {
	ents, err := os.ReadDir(RunDir(s.cfg.Home))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("finding keepers: %w", err)
	}
	seen := map[string]bool{}
	var ids, hosts []string
	for _, e := range ents {
		name := e.Name()
		if host, ok := strings.CutSuffix(name, ".host.sock"); ok && validID(host) {
			hosts = append(hosts, host)
			continue
		}
		for _, ext := range []string{".sock", ".json", ".notify", ".log"} {
			if id, ok := strings.CutSuffix(name, ext); ok && validID(id) && !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	var out []supervisor.Survivor
	for _, id := range ids {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		s.mu.Lock()
		mine := s.procs[id] != nil || s.starting[id]
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return out, errors.New("survivors: the spawner is closed")
		}
		if mine {
			continue
		}
		pp := pathsFor(s.cfg.Home, id)
		conn, rd, st, err := connect(pp.sock)
		if err != nil {
			s.reclaim(pp, true)
			continue
		}
		p := newProcess(s, pp, conn, rd, st)
		if !s.add(p) {
			p.detachNow()
			return out, errors.New("survivors: the spawner is closed")
		}
		s.log.Info("adopted a running keeper", "id", id, "app", st.App, "instance", st.Instance, "pid", st.Pid,
			"ready", st.Ready, "exited", st.Exit != nil)
		out = append(out, supervisor.Survivor{App: st.App, Instance: st.Instance, Process: p})
	}
	// After the instances, whose reclaim removed the files of their dead
	// keepers: a keeper killed with no instance left.
	for _, host := range hosts {
		s.mu.Lock()
		mine := s.starting[host]
		s.mu.Unlock()
		if !mine {
			s.reclaimHost(host)
		}
	}
	return out, nil
}

// reclaim cleans up after a keeper that does not answer: if it is dead,
// its app's group is SIGKILLed (when the recorded app still runs) and its
// files are removed. A keeper that still runs is left alone, as are the
// files of a keeper that may still be starting (found is true when they
// were found lying around rather than left by a failed spawn).
func (s *Spawner) reclaim(pp paths, found bool) {
	st, err := readState(pp.state)
	if err == nil {
		keeper := proc.Identity{Pid: st.KeeperPid, Start: st.KeeperStart}
		if keeper.Running() {
			s.log.Warn("a keeper runs but does not answer; leaving it", "id", st.ID, "keeper_pid", st.KeeperPid)
			return
		}
		app := proc.Identity{Pid: st.Pid, Start: st.PidStart}
		if app.Running() {
			s.log.Warn("killing the app of a dead keeper", "id", st.ID, "app", st.App, "instance", st.Instance, "pid", st.Pid)
		}
		killAndWait(app, true, s.log)
		if st.Host != "" {
			hp := hostPathsFor(s.cfg.Home, st.Host)
			if t := tail(hp.log); t != "" {
				s.log.Warn("removing the files of a dead keeper", "keeper", st.Host, "keeper_log", t)
			}
			if err := hp.remove(); err != nil {
				s.log.Warn("removing keeper files", "err", err)
			}
		}
	} else if found {
		if _, serr := os.Stat(pp.sock); serr != nil {
			// No socket and no state: a keeper still starting, or one that
			// died starting. Only an old enough log is stale.
			fi, lerr := os.Stat(pp.log)
			if lerr == nil && time.Since(fi.ModTime()) < handshakeTimeout {
				return
			}
		}
	}
	if t := tail(pp.log); t != "" {
		s.log.Warn("removing the files of a dead keeper", "id", pp.id, "keeper_log", t)
	}
	if err := pp.remove(); err != nil {
		s.log.Warn("removing keeper files", "err", err)
	}
}

// reclaimHost removes the files of a keeper process found lying around
// that does not answer on its socket (and is not one this Spawner is
// starting): it has died.
func (s *Spawner) reclaimHost(host string) {
	hp := hostPathsFor(s.cfg.Home, host)
	if c, err := dialUnix(hp.sock); err == nil {
		c.Close()
		return
	}
	if fi, err := os.Stat(hp.log); err == nil && time.Since(fi.ModTime()) < handshakeTimeout {
		if _, serr := os.Stat(hp.sock); serr != nil {
			return // still starting its first instance
		}
	}
	if t := tail(hp.log); t != "" {
		s.log.Warn("removing the files of a dead keeper", "keeper", host, "keeper_log", t)
	}
	if err := hp.remove(); err != nil {
		s.log.Warn("removing keeper files", "err", err)
	}
}

// killAndWait SIGKILLs the process id names — and its whole group if
// group is set — unless its pid now belongs to another process, and waits,
// bounded, until it is gone.
func killAndWait(id proc.Identity, group bool, log *slog.Logger) {
	kill := id.Signal
	if group {
		kill = id.KillGroup
	}
	if err := kill(syscall.SIGKILL); err != nil {
		log.Error("killing an orphaned process", "pid", id.Pid, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), goneTimeout)
	defer cancel()
	if err := id.WaitGone(ctx); err != nil {
		log.Error("an orphaned process did not die", "pid", id.Pid, "err", err)
	}
}

// Close detaches from every keeper without stopping anything: the apps
// and their keepers run on, and the next daemon adopts them. The standby
// keeper exits. Events
// channels receive nothing more (and are not closed). Spawn and Survivors
// fail afterwards. Close waits for the Spawner's connection goroutines;
// the waiters of keepers it started end when those keepers do.
func (s *Spawner) Close() error {
	s.trim.Stop()
	s.mu.Lock()
	s.closed = true
	procs := make([]*process, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	standby := s.standby
	s.standby = nil
	s.mu.Unlock()
	s.wakeWatcher() // it ends once no keeper is left to watch
	if standby != nil {
		standby.discard(s.log)
		s.done(standby)
	}
	s.wg.Wait()
	for _, p := range procs {
		p.detachNow()
	}
	if s.wires != nil {
		// After the processes: their detaching waits for the poller to
		// tell their connections' end. A process added since reads
		// with a goroutine.
		s.wires.close()
	}
	return nil
}

// keeperEnv is the environment a keeper starts with: the daemon's, minus
// what describes the daemon's own sockets.
// It also starts the keeper on one P (procs.Limit) with the GOMAXPROCS
// the daemon's apps are to get, so the keeper need not exec itself again.
func keeperEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !daemonOnly(k) {
			out = append(out, kv)
		}
	}
	return procs.Env(out, 1)
}

// adopted waits until no Survivors hands sockets over, or until stop is
// closed (then it reports false).
func (s *Spawner) adopted(stop <-chan struct{}) bool {
	s.mu.Lock()
	gate := s.adopting
	s.mu.Unlock()
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-stop:
		return false
	}
}

// connect dials a keeper and reads its hello.
func connect(sock string) (*net.UnixConn, *wireReader, *State, error) {
	return connectBy(sock, time.Now().Add(helloTimeout))
}

// helloDeadline is when a spawn gives up on the hello of the instance it
// just started: the spawn's own deadline, but never sooner than
// helloTimeout from now. On a box starved of CPU (a thousand apps writing
// logs flat out) the keeper is slow to answer, and a spawn that gave up
// would kill the instance it had started.
func helloDeadline(spawn time.Time) time.Time {
	return later(spawn, time.Now().Add(helloTimeout))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// connectBy is connect with the hello due by deadline.
func connectBy(sock string, deadline time.Time) (*net.UnixConn, *wireReader, *State, error) {
	c, err := dialUnix(sock)
	if err != nil {
		return nil, nil, nil, err
	}
	rd := newWireReader(c)
	fail := func(err error) (*net.UnixConn, *wireReader, *State, error) {
		rd.close()
		c.Close()
		return nil, nil, nil, err
	}
	rd.setReadDeadline(deadline)
	line, err := rd.next()
	if err != nil {
		return fail(fmt.Errorf("reading the keeper's hello: %w", err))
	}
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return fail(fmt.Errorf("reading the keeper's hello: %w", err))
	}
	rd.setReadDeadline(time.Time{})
	switch {
	case m.Type != msgHello || m.State == nil || m.FDs != 0:
		return fail(fmt.Errorf("keeper said %q before hello", m.Type))
	case m.State.Version != protocolVersion:
		return fail(fmt.Errorf("keeper speaks protocol version %d, not %d", m.State.Version, protocolVersion))
	}
	return c, rd, m.State, nil
}

// tail returns the end of a file, for diagnostics.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-logTail, 0)
	b := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(b, off)
	return strings.TrimSpace(string(b[:n]))
}

// LogCount is how many bytes one keeper's app has written to its stdout
// and stderr since the keeper started (it counts, the daemon adds up).
type LogCount struct {
	ID       string // the keeper's
	App      string
	Out, Err uint64
}

// LogBytes asks every keeper of this Spawner for its counts. A keeper
// that cannot answer (gone, or of an older keel without the command) is
// left out. It makes one call per keeper: for a background poll, not for
// a request's path.
func (s *Spawner) LogBytes() []LogCount {
	s.mu.Lock()
	procs := make([]*process, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	out := make([]LogCount, 0, len(procs))
	for _, p := range procs {
		m, err := p.call(command{Cmd: cmdLogBytes}, true)
		if err != nil || len(m.LogBytes) != 2 {
			continue
		}
		out = append(out, LogCount{ID: p.st.ID, App: p.st.App, Out: m.LogBytes[0], Err: m.LogBytes[1]})
	}
	return out
}
