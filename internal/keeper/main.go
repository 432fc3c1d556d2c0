package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/cgroup"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/procs"
	"github.com/keel-run/keel/internal/ready"
	"github.com/keel-run/keel/internal/reaper"
	"github.com/keel-run/keel/internal/sdnotify"
	"github.com/keel-run/keel/internal/spec"
)

// pipeSize is what the keeper asks the app's stdout and stderr pipes to
// hold, so a burst of output does not stall the app while the log is
// written.
const pipeSize = 1 << 20

// Config is what a keeper runs, as JSON on its stdin (or in a file given
// with --config).
type Config struct {
	ID       string    `json:"id"`
	Home     string    `json:"home"`
	App      *spec.App `json:"app"`
	Instance int       `json:"instance"`
	Restarts int       `json:"restarts"`
	// Env is KEY=VALUE entries laid over the keeper's own environment,
	// under the app's env.
	Env []string `json:"env,omitempty"`
	// ListenNames names the listening sockets the keeper inherited as fds
	// 3, 4, …; the app gets them at the same numbers.
	ListenNames []string `json:"listen_names,omitempty"`
	// NodeIPC asks for Node's IPC channel (see Options.NodeIPC).
	NodeIPC bool `json:"node_ipc,omitempty"`
	// Host, when set, makes the keeper process one that holds every
	// instance of the app this daemon asks it to: it serves hostPaths'
	// socket, where each further Config (of the same app and Host) comes
	// like the first, and exits once its last instance is released. The
	// first Config's ID is then its first instance's, not the process's.
	Host string `json:"host,omitempty"`
	// Cgroup is a cgroup v2 directory under which the keeper makes a
	// group for the app's tree (see SpawnerConfig.Cgroup); "": none.
	Cgroup string `json:"cgroup,omitempty"`
}

func (c *Config) check() error {
	switch {
	case !validID(c.ID):
		return fmt.Errorf("config: bad id %q", c.ID)
	case c.Home == "" || !strings.HasPrefix(c.Home, "/"):
		return fmt.Errorf("config: home %q is not an absolute path", c.Home)
	case c.App == nil:
		return errors.New("config: no app")
	case c.Instance < 0:
		return fmt.Errorf("config: bad instance %d", c.Instance)
	case c.Host != "" && !validID(c.Host):
		return fmt.Errorf("config: bad host id %q", c.Host)
	}
	return nil
}

// Main is the keeper process: "keel __keeper [--config file]", args being
// what follows "__keeper". It returns the exit code for os.Exit: 0 after
// the release of its last instance (or, for a standby keeper, at EOF
// before any config), 1 when the app could not be started, 2 for a bad
// config. Like a main function it subscribes to signals and rewires the
// process's stdio; call it only as the process's main.
func Main(args []string) int { return MainWith(args, Options{}) }

// MainWith is Main with hooks.
func MainWith(args []string, opts Options) int {
	// A keeper's work is one owner loop per instance and three pollers,
	// all waiting almost always: a second P buys it nothing.
	procs.Limit(1)
	sigC := make(chan os.Signal, 8)
	// SIGPIPE is caught, not ignored: an ignored signal stays ignored in
	// the app, a caught one is reset by exec.
	signal.Notify(sigC, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigC)

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, files, err := readConfig(args)
	if errors.Is(err, errNoConfig) {
		// A standby keeper that was not needed: its daemon closed it, or
		// went away.
		return 0
	}
	if err != nil {
		writeHandshake(handshake{Error: err.Error()})
		return 2
	}
	logPath := pathsFor(cfg.Home, cfg.ID).log
	if cfg.Host != "" {
		logPath = hostPathsFor(cfg.Home, cfg.Host).log
	}
	if err := openLog(cfg.Home, logPath); err != nil {
		for _, f := range files {
			f.Close()
		}
		writeHandshake(handshake{Error: err.Error()})
		return 1
	}
	if cfg.Host != "" {
		log = log.With("keeper", cfg.Host, "app", cfg.App.Name)
	}
	// Orphans of the apps' trees (a double fork, a setsid child whose
	// parent exited) come to the keeper, which kills them with the
	// instance they came from (proc.Options.Mark).
	if err := reaper.BecomeSubreaper(); err != nil {
		log.Warn("keeper: orphans of the app go to init, out of keel's reach", "err", err)
	}
	// The reaper runs before any app starts: apps start through it, so it
	// never takes their exits for an orphan's.
	sh := &shared{reaper: reaper.New(), exits: proc.NewExitWatcher()}
	// Read once: every instance's state names its keeper, and a start of
	// a thousand instances would read /proc/self/stat a thousand times.
	sh.self, _ = proc.Identify(os.Getpid())
	if p, err := logs.NewPoller(); err != nil {
		log.Warn("keeper: capturing output with a goroutine per pipe", "err", err)
	} else {
		sh.logs = p
		defer p.Close()
	}
	if w, err := newWirePoller(); err != nil {
		log.Warn("keeper: reading daemons with a goroutine per connection", "err", err)
	} else {
		sh.wires = w
		defer w.close()
	}
	stopReaping := sh.watch()
	h := newHost(cfg, opts, sh, log)
	k, err := h.start(cfg, files)
	if err != nil {
		log.Error("keeper: start failed", "id", cfg.ID, "err", err)
		writeHandshake(handshake{Error: err.Error()})
		stopReaping()
		return 1
	}
	h.listen()
	st := k.state
	if err := writeHandshake(handshake{OK: true, State: &st}); err != nil {
		// The daemon went away while we started; the next one adopts us.
		log.Warn("keeper: handshake not delivered", "err", err)
	}
	detachStdio(log)
	k.log.Info("keeper: app started", "pid", st.Pid)
	h.run(k, sigC)
	// What is left are orphans that dropped their instance's mark from
	// their environment: with the last instance gone, they go too.
	if n := proc.KillDescendants(0); n > 0 {
		log.Warn("keeper: killed processes left by the app's instances", "count", n)
	}
	stopReaping()
	return 0
}

// shared is what the keeper process's instances share: reaper reaps the
// children no proc.Process waits for (orphans re-parented to the keeper;
// the apps start through it), exits tells of the apps' exits, logs
// captures their output and wires reads their daemons (nil: goroutines
// of each instance's own).
type shared struct {
	reaper *reaper.Reaper
	exits  *proc.ExitWatcher
	logs   *logs.Poller
	wires  *wirePoller
	self   proc.Identity // the keeper process itself
}

// watch does both on every SIGCHLD, in one goroutine, until the function
// it returns is called.
func (c *shared) watch() func() {
	sigchld := make(chan os.Signal, 16)
	signal.Notify(sigchld, syscall.SIGCHLD)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.reaper.ReapAll(nil)
			c.exits.Check()
			select {
			case <-ctx.Done():
				return
			case <-sigchld:
			}
		}
	}()
	return func() { cancel(); <-done; signal.Stop(sigchld) }
}

// errNoConfig is an empty config: EOF came first.
var errNoConfig = errors.New("no config")

// readConfig reads the Config from stdin — a unix socket that also
// carries the listen fds as SCM_RIGHTS, or a pipe — until EOF, or from the
// file given with --config.
func readConfig(args []string) (*Config, []*os.File, error) {
	var b []byte
	var files []*os.File
	var err error
	switch {
	case len(args) == 0:
		b, files, err = recvConfig(0)
	case len(args) == 2 && args[0] == "--config":
		b, err = os.ReadFile(args[1])
	default:
		return nil, nil, fmt.Errorf("usage: keel %s [--config file]", KeeperArg)
	}
	cfg, err := decodeConfig(b, files, err)
	if err != nil {
		return nil, nil, err
	}
	if len(files) > 0 && len(files) != len(cfg.ListenNames) {
		closeFiles(files)
		return nil, nil, fmt.Errorf("config: %d listen names for %d descriptors", len(cfg.ListenNames), len(files))
	}
	return cfg, files, nil
}

// decodeConfig parses and checks a Config as read (b, with the
// descriptors that came along, or the read's error); on any error it
// closes files. Empty input is errNoConfig.
func decodeConfig(b []byte, files []*os.File, readErr error) (*Config, error) {
	fail := func(err error) (*Config, error) {
		closeFiles(files)
		return nil, err
	}
	if readErr != nil {
		return fail(fmt.Errorf("reading config: %w", readErr))
	}
	if len(b) == 0 {
		return fail(errNoConfig)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fail(fmt.Errorf("reading config: %w", err))
	}
	if err := cfg.check(); err != nil {
		return fail(err)
	}
	return &cfg, nil
}

// appendRights appends the descriptors that the SCM_RIGHTS messages in
// oob carry to files.
func appendRights(files []*os.File, oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return files, err
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "listener"))
		}
	}
	return files, nil
}

// recvConfig reads fd until EOF, collecting the descriptors that come
// along. A descriptor that is not a socket is read as a plain file.
func recvConfig(fd int) ([]byte, []*os.File, error) {
	var data []byte
	var files []*os.File
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)) // SCM_MAX_FD descriptors
	for {
		n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOTSOCK):
			b, err := io.ReadAll(os.Stdin)
			return b, nil, err
		case err != nil:
			return nil, files, err
		}
		if oobn > 0 {
			if files, err = appendRights(files, oob[:oobn]); err != nil {
				return nil, files, err
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return nil, files, errors.New("too many descriptors")
		}
		if n == 0 {
			return data, files, nil
		}
		data = append(data, buf[:n]...)
	}
}

// openLog makes the keeper's own log its stderr.
func openLog(home, path string) error {
	if err := ensureDirs(home); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening the keeper's log: %w", err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var derr error
	if err := rc.Control(func(fd uintptr) { derr = unix.Dup3(int(fd), 2, 0) }); err != nil {
		return err
	}
	if derr != nil {
		return fmt.Errorf("opening the keeper's log: %w", derr)
	}
	return nil
}

func writeHandshake(h handshake) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(b, '\n'))
	return err
}

// detachStdio points stdin and stdout at /dev/null, dropping the
// daemon's handshake and config pipes. Stderr is the keeper's own log.
func detachStdio(log *slog.Logger) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		log.Warn("keeper: opening /dev/null", "err", err)
		return
	}
	defer null.Close()
	rc, err := null.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for _, to := range []int{0, 1} {
			if err := unix.Dup3(int(fd), to, 0); err != nil {
				log.Warn("keeper: detaching stdio", "fd", to, "err", err)
			}
		}
	})
}

// start sets up everything and spawns the app; files are the listen fds
// that came with the config (none: they were inherited as fds 3, 4, …).
// On error nothing is left running and no file but the keeper's log is
// left behind.
func start(cfg *Config, files []*os.File, opts Options, sh *shared, log *slog.Logger) (k *keeper, err error) {
	app := cfg.App.Clone()
	app.Normalize()
	p := pathsFor(cfg.Home, cfg.ID)
	if err := ensureDirs(cfg.Home); err != nil {
		return nil, err
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	listeners := files
	if len(listeners) == 0 && len(cfg.ListenNames) > 0 {
		listeners = make([]*os.File, len(cfg.ListenNames))
		for i, name := range cfg.ListenNames {
			fd := 3 + i
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return nil, fmt.Errorf("listen fd %d (%s) was not passed: %w", fd, name, err)
			}
			unix.CloseOnExec(fd)
			listeners[i] = os.NewFile(uintptr(fd), name)
		}
	}
	closeListeners := func() {
		for _, f := range listeners {
			f.Close()
		}
	}
	undo = append(undo, closeListeners)

	ln, err := listenUnix(p.sock)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { ln.Close(); os.Remove(p.sock) })

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	defer outW.Close()
	defer errW.Close()
	undo = append(undo, func() { outR.Close(); errR.Close() })
	growPipe(outR, log)
	growPipe(errR, log)

	lopts := logs.Options{MaxSize: int64(app.LogMaxSize), Keep: app.LogKeep, UntilRead: app.LogsUntilRead}
	wOut, err := logs.OpenWriter(logs.Path(cfg.Home, app.Name, cfg.Instance, logs.Stdout), lopts)
	if err != nil {
		return nil, fmt.Errorf("opening stdout log: %w", err)
	}
	undo = append(undo, func() { wOut.Close() })
	wErr, err := logs.OpenWriter(logs.Path(cfg.Home, app.Name, cfg.Instance, logs.Stderr), lopts)
	if err != nil {
		return nil, fmt.Errorf("opening stderr log: %w", err)
	}
	undo = append(undo, func() { wErr.Close() })

	base := app.ShellEnv
	if base == nil {
		base = os.Environ()
	}
	env := appEnv(base, cfg, app)
	argv := app.Argv()
	extra := slices.Clone(listeners)

	var notify *sdnotify.Server
	if app.Ready == spec.ReadyNotify {
		addr := p.notify
		if len(addr) > maxSunPath {
			addr = "@keel-notify-" + cfg.ID
		}
		if notify, err = sdnotify.Listen(addr); err != nil {
			return nil, err
		}
		undo = append(undo, func() { notify.Close() })
		env.set("NOTIFY_SOCKET", addr)
	}

	// listenC and nodeC only where a Node channel may use them: each
	// channel costs an idle instance memory, and each non-nil case of
	// its owner loop's select a parked sudog.
	var listenC chan *listenAsk
	var nodeC chan NodeEvent
	quit := make(chan struct{})
	var node NodeChannel
	if cfg.NodeIPC && opts.NodeIPC != nil {
		listenC = make(chan *listenAsk)
		node, err = opts.NodeIPC(NodeIPCRequest{
			App: app, Instance: cfg.Instance, Argv: argv,
			Listeners: listeners, ListenNames: cfg.ListenNames,
			ListenFor: askDaemon(listenC, quit),
			RunDir:    p.dir, Log: log,
		})
		if err != nil {
			return nil, fmt.Errorf("opening node ipc channel: %w", err)
		}
		undo = append(undo, func() { node.Close() })
		nodeC = make(chan NodeEvent, 16)
		child := node.Child()
		defer child.Close()
		var nenv []string
		argv, nenv = node.Prepare(3+len(extra), argv)
		extra = append(extra, child)
		for _, kv := range nenv {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env.set(k, v)
			}
		}
	} else if app.Ready == spec.ReadyMessage || app.Ready == spec.ReadyListen {
		log.Warn("keeper: this keel has no Node IPC channel; the app counts as ready once started", "ready", app.Ready)
	}

	var group *cgroup.Group
	if cfg.Cgroup != "" {
		if group, err = cgroup.Create(cfg.Cgroup, "keel-"+cfg.ID); err != nil {
			log.Warn("keeper: no cgroup for the app; its descendants end through the subreaper alone", "err", err)
			group = nil
		} else {
			undo = append(undo, func() { group.Remove() })
		}
	}
	po := proc.Options{
		Argv:            argv,
		Dir:             app.Cwd,
		Env:             env.list(),
		Stdout:          outW,
		Stderr:          errW,
		ExtraFiles:      extra,
		ListenNames:     cfg.ListenNames,
		Helper:          procs.SelfExe,
		KillGroupOnExit: true,
		// With the keeper a subreaper, that is every descendant that
		// carries this instance's mark; the keeper's other instances and
		// their orphans carry their own.
		KillDescendantsOnExit: true,
		Mark:                  runIDVar + "=" + cfg.ID,
		Leader:                sh.reaper.Owns, // the other instances' apps
		StartCmd:              sh.reaper.Start,
		Exits:                 sh.exits,
	}
	if group != nil { // not a typed nil in the interface
		po.Cgroup = group
	}
	pr, err := proc.Start(po)
	if err != nil {
		return nil, err
	}
	// Our copies of the write ends must go, or the pipes never reach EOF.
	outW.Close()
	errW.Close()

	k = &keeper{
		cfg:       cfg,
		app:       app,
		log:       log,
		paths:     p,
		ln:        ln,
		proc:      pr,
		group:     group,
		notify:    notify,
		node:      node,
		listeners: listeners,
		peers:     map[*peer]struct{}{},
		joinC:     make(chan joining),
		leaveC:    make(chan *peer),
		cmdC:      make(chan peerCommand),
		readyC:    make(chan struct{}, 1),
		nodeC:     nodeC,
		listenC:   listenC,
		asks:      map[int]*listenAsk{},
		exitC:     make(chan spec.Exit, 1),
		diedC:     make(chan struct{}, 1),
		quit:      quit,
		state: State{
			Version:     protocolVersion,
			ID:          cfg.ID,
			App:         app.Name,
			Instance:    cfg.Instance,
			Restarts:    cfg.Restarts,
			Pid:         pr.Pid(),
			PidStart:    pr.Identity().Start,
			Started:     pr.Started(),
			KeeperPid:   sh.self.Pid,
			KeeperStart: sh.self.Start,
			Host:        cfg.Host,
		},
	}
	// What only the start needed goes: a keeper of a thousand instances
	// would hold a thousand copies of the environment.
	cfg.App, cfg.Env = nil, nil
	app.ShellEnv = nil
	if err := writeState(p.state, &k.state); err != nil {
		_ = pr.Signal(syscall.SIGKILL)
		<-pr.Done()
		return nil, err
	}

	k.readyCtx, k.stopReady = context.WithCancel(context.Background())
	switch {
	case node != nil && (app.Ready == spec.ReadyMessage || app.Ready == spec.ReadyListen):
	case app.Ready == spec.ReadyNotify:
	case strings.HasPrefix(app.Ready, "tcp://") || strings.HasPrefix(app.Ready, "http://"):
		probe, err := ready.Parse(app.Ready)
		if err != nil {
			k.log.Error("keeper: bad ready target; the app will not be reported ready", "err", err)
			break
		}
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			if probe.Wait(k.readyCtx, 0) == nil {
				k.readyC <- struct{}{}
			}
		}()
	default:
		k.state.Ready = true
	}
	if node != nil {
		k.nodeDone = make(chan struct{})
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			defer close(k.nodeDone)
			err := node.Serve(k.readyCtx, func(ev NodeEvent) {
				select {
				case k.nodeC <- ev:
				default:
					k.log.Warn("keeper: node event dropped", "event", int(ev.Kind))
				}
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				k.log.Warn("keeper: node ipc channel", "err", err)
			}
		}()
	}

	// Capture now; the rest of the drain starts at the exit (see
	// keeper.drain), so an idle instance costs no goroutine for it.
	k.logOut, k.logErr = wOut, wErr
	k.outR, k.errR = outR, errR
	k.poller = sh.logs
	k.capture()
	k.wires = sh.wires
	if k.wires != nil {
		if k.lnReads, err = k.wires.listen(k.ln, k.acceptFd); err == nil {
			// The poller's duplicate listens on: one descriptor per
			// instance, not two. (The path stays: no unlink on close.)
			k.ln.Close()
			return k, nil
		}
		k.log.Warn("keeper: accepting with a goroutine of the instance's own", "err", err)
		k.wires, err = nil, nil
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.accept()
	}()
	return k, nil
}

// growPipe enlarges a pipe's buffer; a failure only costs throughput.
func growPipe(f *os.File, log *slog.Logger) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if _, err := unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize); err != nil {
			log.Debug("keeper: growing pipe", "err", err)
		}
	})
}

// runIDVar names the variable that tells an app's process the id of its
// run (a new one at every restart). Its descendants inherit it, which is
// how the keeper tells one instance's orphans from another's.
const runIDVar = "KEEL_RUN_ID"

// daemonOnly reports the variables of the daemon's environment that
// describe the daemon's own sockets and channels; an app never inherits
// them.
func daemonOnly(key string) bool {
	switch key {
	case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC",
		"NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID":
		return true
	}
	return false
}

// appEnv is the app's environment: base (the environment `keel start` ran
// in, else the keeper's own) minus the daemon's variables, then
// Config.Env, then the app's env, then keel's variables.
func appEnv(base []string, cfg *Config, app *spec.App) *envList {
	e := &envList{vals: map[string]string{}}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if ok && !daemonOnly(k) {
			e.set(k, v)
		}
	}
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			e.set(k, v)
		}
	}
	keys := make([]string, 0, len(app.Env))
	for k := range app.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e.set(k, app.Env[k])
	}
	e.set("KEEL_APP", app.Name)
	e.set("KEEL_INSTANCE", strconv.Itoa(cfg.Instance))
	e.set("NODE_APP_INSTANCE", strconv.Itoa(cfg.Instance))
	e.set(runIDVar, cfg.ID)
	return e
}

// envList is an environment in first-set order, the last value winning.
type envList struct {
	keys []string
	vals map[string]string
}

func (e *envList) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *envList) list() []string {
	out := make([]string, len(e.keys))
	for i, k := range e.keys {
		out[i] = k + "=" + e.vals[k]
	}
	return out
}
