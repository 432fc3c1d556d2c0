// Package daemon is keel's composition root: it takes the KEEL_HOME lock,
// opens the state store, builds the keeper spawner, the supervisor, the
// crash recorder, the stats sampler and the restart triggers, and serves
// the control socket. It implements control.Backend on top of them.
//
// When the daemon exits for any reason other than `keel kill`, the apps
// keep running under their keepers; the next daemon adopts them.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/control"
	"github.com/keel-run/keel/internal/health"
	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/keeper"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/store"
	"github.com/keel-run/keel/internal/supervisor"
)

// ErrAlreadyRunning means another daemon holds this KEEL_HOME.
var ErrAlreadyRunning = errors.New("a keel daemon is already running for this KEEL_HOME")

// Names of the files the daemon keeps in KEEL_HOME.
const (
	LockName  = "daemon.lock"
	PidName   = "daemon.pid"
	StateName = "state.db"
	DumpName  = "dump.json"
)

// Options configure a daemon.
type Options struct {
	Home    string
	Exe     string // the keel binary keepers are started from
	Version string
	Logger  *slog.Logger
	// Foreground runs Apps with no control of their own lifetime beyond
	// ctx: `keel run`. The apps are started at once, state is not restored
	// or persisted, and when ctx is done every app is stopped before Run
	// returns.
	Foreground bool
	Apps       []*spec.App
	// Echo, in foreground mode, receives every line the apps write, as
	// `keel logs --follow` shows them (a container's log collector reads
	// keel run's stdout).
	Echo io.Writer
	// LogFormat, in foreground mode, is how Echo gets the lines: "text"
	// (as keel logs shows them, the default) or "json" (one object a
	// line: time, app, instance, stream, line).
	LogFormat string
	// LogFiles, in foreground mode, keeps the apps' log files in Home;
	// false sends their lines to Echo alone.
	LogFiles bool
	// Health, in foreground mode, is the address that answers the
	// kubelet's probes (internal/health); "" serves none.
	Health string
	// StatsInterval is how often memory and CPU are sampled (default 1s).
	StatsInterval time.Duration
	// StartChild starts the daemon's own children (keepers, on_crash
	// commands) and returns their wait; nil: cmd.Start and cmd.Wait.
	// `keel run` passes its reaper's, which leaves their status to them.
	StartChild func(*exec.Cmd) (wait func() error, err error)
	// Cgroup is a cgroup v2 directory under which each instance gets a
	// group of its own (keeper.SpawnerConfig.Cgroup); one that is not a
	// writable cgroup v2 directory means no cgroups, and describe says
	// why. "": the daemon uses its own delegated subtree when it has one
	// (cgroup.Delegate), and no cgroups otherwise.
	Cgroup string
}

// ErrUnclean is returned by a foreground run when an app was errored or
// did not stop within its kill_timeout and had to be killed.
var ErrUnclean = errors.New("not every app stopped cleanly")

// Daemon is a running daemon; it implements control.Backend.
type Daemon struct {
	o     Options
	log   *slog.Logger
	store *store.Store // nil in foreground mode
	sup   *supervisor.Supervisor
	socks *sockets.Set
	stats *statsCache
	crash *crashRecorder
	trig  *triggerManager
	web   webListener
	spawn *keeper.Spawner

	killOnce sync.Once
	killC    chan struct{} // closed by Kill once every app has stopped
	// containment is describe's answer to how descendants end (fixed at
	// start).
	containment string
}

// Procs is how many Ps (GOMAXPROCS) the daemon runs on; its main starts
// it so with procs.Limit. Its work is a control plane: on 2 cores it
// starts 1,000 instances with both busy mostly in the kernel's fork/exec
// and the keepers, so more Ps would buy little, and each costs memory.
const Procs = 2

// Run runs the daemon until ctx is done or `keel kill`.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if o.StatsInterval == 0 {
		o.StatsInterval = time.Second
	}
	// The daemon's live heap is about half a megabyte, but Go lets garbage
	// grow to a 4 MB heap before collecting: under steady control traffic
	// (a monitor running keel ls every second) that was 2 MB more RSS than
	// with GOGC=50, which costs a sub-millisecond collection per ~150
	// requests. A GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	// Whatever the CLI that started us inherited (a shell's stray fds) must
	// not reach the keepers and apps.
	if err := proc.CloseOnExecAbove2(); err != nil {
		o.Logger.Warn("marking inherited descriptors close-on-exec", "err", err)
	}
	if err := os.MkdirAll(o.Home, 0o700); err != nil {
		return fmt.Errorf("creating KEEL_HOME %s: %w", o.Home, err)
	}
	lock := flock.New(filepath.Join(o.Home, LockName))
	locked, err := lock.TryLock()
	if err != nil {
		return fmt.Errorf("locking KEEL_HOME %s: %w", o.Home, err)
	}
	if !locked {
		return ErrAlreadyRunning
	}
	defer lock.Unlock()
	pidPath := filepath.Join(o.Home, PidName)
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", pidPath, err)
	}
	defer os.Remove(pidPath)

	if o.Foreground && !o.LogFiles {
		cleanup, err := memoryLogs(o.Home, o.Apps, o.Logger)
		if err != nil {
			return err
		}
		// Deferred before the echo below, so it runs after the echo's
		// last read.
		defer cleanup()
	}

	cg, cgWhy := instanceCgroups(o.Cgroup)
	if cg == "" {
		o.Logger.Info("no cgroup per instance; the keepers end every descendant as child subreapers", "why", cgWhy)
	}
	d := &Daemon{o: o, log: o.Logger, killC: make(chan struct{}), containment: containment(cg, cgWhy)}
	var st supervisor.Store
	if !o.Foreground {
		s, err := store.Open(filepath.Join(o.Home, StateName))
		if err != nil {
			return err
		}
		defer s.Close()
		d.store = s
		st = s
	}
	d.socks = sockets.NewSet(o.Logger)
	defer d.socks.Close()
	spawner := keeper.NewSpawner(keeper.SpawnerConfig{
		Home:         o.Home,
		Exe:          o.Exe,
		Logger:       o.Logger,
		Listeners:    d.listeners,
		ListenFor:    d.listenFor,
		AdoptSockets: d.adoptSockets,
		AdoptionDone: d.socks.AdoptionDone,
		StartCmd:     o.StartChild,
		Cgroup:       cg,
		// An app's restarts and further instances go to its keeper
		// process, already running; a keeper started ahead of time would
		// only speed up the first instance of the next app, for 3 MB.
		NoStandby: true,
	})
	defer spawner.Close()
	d.spawn = spawner
	d.crash = newCrashRecorder(o.Home, d.store, o.Logger, o.StartChild)
	defer d.crash.close()
	d.sup = supervisor.New(supervisor.Config{
		Spawner: spawner,
		Store:   st,
		Logger:  o.Logger,
		OnExit:  d.crash.record,
		Serving: d.socks.Serving,
	})
	mem, err := newInstanceMemory(cg)
	if err != nil {
		o.Logger.Warn("memory of the instances' cgroups unreadable; counting their trees in /proc", "err", err)
	}
	d.stats = newStatsCache(o.StatsInterval, mem)
	d.trig = newTriggerManager(d, o.Logger)
	defer d.trig.close()

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	supDone := make(chan error, 1)
	go func() { supDone <- d.sup.Run(runCtx) }()

	// The supervisor restores the stored apps before it takes calls; the
	// first call below waits for that.
	apps, err := d.sup.Apps(ctx, spec.All)
	if err != nil && !isNotFound(err) {
		stopRun()
		<-supDone
		return fmt.Errorf("starting the supervisor: %w", err)
	}
	specs := make([]*spec.App, 0, len(apps))
	for _, a := range apps {
		specs = append(specs, a.Spec)
		if err := d.socks.Ensure(a.Spec.Name, a.Spec.Listen); err != nil {
			d.log.Error("opening sockets of a restored app", "app", a.Spec.Name, "err", err)
		}
	}
	// Sockets the surviving instances handed back for apps that are no
	// longer defined.
	d.pruneSockets(specs)
	d.trig.sync(ctx)

	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		d.stats.run(runCtx, d.sup)
	}()
	defer func() { stopRun(); <-statsDone }()

	srv := control.NewServer(d, o.Logger)
	srvCtx, stopSrv := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(srvCtx, control.SocketPath(o.Home)) }()
	d.log.Info("daemon started", "pid", os.Getpid(), "home", o.Home, "version", o.Version, "foreground", o.Foreground)
	if !o.Foreground {
		d.restoreWeb(ctx)
		defer d.closeWeb()
	}

	var result error
	if o.Foreground && o.Health != "" {
		// Opened before the apps start, so that the kubelet sees 503s,
		// not refused connections, while they come up.
		stopHealth, err := d.serveHealth(ctx, o.Health)
		if err != nil {
			result = err
		} else {
			// Deferred after the apps are stopped: /livez answers and
			// /readyz says "stopping" for the whole drain.
			defer stopHealth()
		}
	}
	if o.Foreground && o.Echo != nil {
		echoCtx, stopEcho := context.WithCancel(context.Background())
		echoed := make(chan struct{})
		since := time.Now()
		go func() {
			defer close(echoed)
			popts := logs.PrintOptions{Home: o.Home, Target: spec.All, Lines: -1, Follow: true, Since: since}
			if !o.LogFiles {
				popts.PollInterval, popts.RemoveRead = memLogPoll, true
			}
			if o.LogFormat == "json" {
				popts.JSON, popts.SplitOver = true, logs.MaxPayload
			}
			err := logs.Print(echoCtx, o.Echo, popts)
			if err != nil {
				d.log.Error("echoing app output", "err", err)
			}
		}()
		// Deferred after the apps are stopped, so their last lines show.
		defer func() { stopEcho(); <-echoed }()
	}
	if o.Foreground && result == nil {
		if _, err := d.Start(ctx, o.Apps); err != nil {
			d.log.Error("starting apps", "err", err)
			result = err
		}
	}
	if result == nil {
		select {
		case <-ctx.Done():
			if !o.Foreground {
				d.log.Info("daemon stopping; apps keep running under their keepers")
			}
		case <-d.killC:
			d.log.Info("daemon killed by keel kill")
		case err := <-srvDone:
			result = fmt.Errorf("control socket: %w", err)
			srvDone = nil
		case err := <-supDone:
			result = fmt.Errorf("supervisor: %w", err)
			supDone = nil
		}
	}
	if o.Foreground && supDone != nil {
		// keel run: the apps live and die with it.
		if err := d.stopEverything(); err != nil && result == nil {
			result = err
		}
	}
	stopSrv()
	if srvDone != nil {
		if err := <-srvDone; err != nil && result == nil {
			d.log.Warn("control server", "err", err)
		}
	}
	stopRun()
	if supDone != nil {
		<-supDone
	}
	return result
}

// stopEverything stops every app for keel run, all at once, and reports
// whether each stopped cleanly. It logs every instance that did not: one
// that was errored when the stop began (a crash loop or a failed start),
// and one whose stop ended in a SIGKILL it was not configured to get (it
// outlived its kill_timeout).
func (d *Daemon) stopEverything() error {
	d.log.Info("stopping every app")
	longest := time.Duration(spec.DefaultKillTimeout)
	for _, a := range d.o.Apps {
		longest = max(longest, a.KillTimeout.D())
	}
	ctx, cancel := context.WithTimeout(context.Background(), longest+10*time.Second)
	defer cancel()
	before, err := d.sup.Apps(ctx, spec.All)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("stopping apps: %w", err)
	}
	var unclean []string
	for _, a := range before {
		for _, in := range a.Instances {
			if in.Status == supervisor.Errored {
				d.log.Error("app was errored", "app", in.App, "instance", in.Instance, "reason", in.Reason)
				unclean = append(unclean, fmt.Sprintf("%s:%d errored", in.App, in.Instance))
			}
		}
	}
	if err := d.sup.StopAll(ctx); err != nil {
		return fmt.Errorf("stopping apps: %w", err)
	}
	after, err := d.sup.Apps(ctx, spec.All)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("stopping apps: %w", err)
	}
	for _, a := range after {
		for _, in := range a.Instances {
			if killed(a, in, before) {
				d.log.Error("app did not stop within its kill_timeout and was killed", "app", in.App, "instance", in.Instance, "kill_timeout", a.Spec.KillTimeout.String())
				unclean = append(unclean, fmt.Sprintf("%s:%d killed after kill_timeout %s", in.App, in.Instance, a.Spec.KillTimeout))
			}
		}
	}
	if len(unclean) > 0 {
		return fmt.Errorf("%w: %s", ErrUnclean, strings.Join(unclean, ", "))
	}
	d.log.Info("every app stopped cleanly")
	return nil
}

// killed says whether in's last stop ended in a SIGKILL that its app's
// kill_signal does not ask for, and that happened during the stop (it was
// not already the last exit before it).
func killed(a supervisor.AppInfo, in supervisor.InstanceInfo, before []supervisor.AppInfo) bool {
	ex := in.LastExit
	if ex == nil || ex.Signal == nil || *ex.Signal != "SIGKILL" || a.Spec.Signal() == syscall.SIGKILL {
		return false
	}
	for _, b := range before {
		if b.Spec.Name != a.Spec.Name {
			continue
		}
		for _, old := range b.Instances {
			if old.Instance == in.Instance && old.LastExit != nil && old.LastExit.At.Equal(ex.At) {
				return false
			}
		}
	}
	return true
}

// serveHealth answers the kubelet's probes on addr until the returned
// function is called; /readyz turns 503 as soon as ctx is done.
func (d *Daemon) serveHealth(ctx context.Context, addr string) (stop func(), err error) {
	ln, err := health.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("opening --health %s: %w", addr, err)
	}
	c := &health.Checker{Source: d.healthApps, Stopping: ctx.Done()}
	srv := c.Server()
	srv.Logger = d.log
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http1.ErrServerClosed) {
			d.log.Error("health endpoint", "err", err)
		}
	}()
	d.log.Info("answering probes", "health", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		<-served
	}, nil
}

// healthApps is every app as the probes see it.
func (d *Daemon) healthApps(ctx context.Context) ([]health.App, error) {
	apps, err := d.sup.Apps(ctx, spec.All)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	out := make([]health.App, 0, len(apps))
	for _, a := range apps {
		h := health.App{Name: a.Spec.Name, Need: a.Spec.ReadyNeed(), ReadyOnce: a.ReadyOnce}
		var why []string
		for _, in := range a.Instances {
			if in.Status == supervisor.Online {
				h.Ready++
				continue
			}
			w := fmt.Sprintf("%s:%d %s", in.App, in.Instance, in.Status)
			if in.Reason != "" {
				w += ": " + in.Reason
			}
			why = append(why, w)
		}
		if a.Stopped {
			why = append([]string{"stopped by keel stop"}, why...)
		}
		h.Why = strings.Join(why, "; ")
		out = append(out, h)
	}
	return out, nil
}

func isNotFound(err error) bool {
	var nf *spec.NotFoundError
	return errors.As(err, &nf)
}

// memLogMaxSize and memLogKeep bound each stream's log under
// --log-files=false: 2 MiB and one rotated file, so about 4 MiB of memory
// (tmpfs pages count against the container's memory limit). The writers
// rotate only once the echo has read and removed the last rotated file
// (spec.App.LogsUntilRead), so no line is lost to a burst; a file grows
// past 2 MiB only while the echo is behind. memLogPoll is how often the
// echo reads.
const (
	memLogMaxSize = 2 << 20
	memLogKeep    = 1
	memLogPoll    = 20 * time.Millisecond
)

// memoryLogs is keel run --log-files=false: the container's stdout is the
// log, so nothing is written under KEEL_HOME. $KEEL_HOME/logs becomes a
// symlink to a private directory in /dev/shm (memory), where the keepers
// still write their records, rotated small: the echo to stdout and crash
// reports (which read an instance's last lines) keep working. The
// returned function removes the directory and the link.
func memoryLogs(home string, apps []*spec.App, log *slog.Logger) (cleanup func(), err error) {
	link := filepath.Join(home, "logs")
	if fi, err := os.Lstat(link); err == nil {
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			// A previous run's, killed before it could clean up: its
			// memory directory goes too.
			if old, err := os.Readlink(link); err == nil && strings.HasPrefix(filepath.Base(old), "keel-logs-") {
				os.RemoveAll(old)
			}
			os.Remove(link)
		case fi.IsDir():
			if err := os.Remove(link); err != nil {
				return nil, fmt.Errorf("--log-files=false: %s holds log files already; move it away or use another KEEL_HOME: %w", link, err)
			}
		default:
			return nil, fmt.Errorf("--log-files=false: %s is in the way", link)
		}
	}
	base := "/dev/shm"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() || unix.Access(base, unix.W_OK) != nil {
		base = os.TempDir()
		log.Warn("no writable /dev/shm: the bounded log tail lives in the temporary directory", "dir", base)
	}
	dir, err := os.MkdirTemp(base, "keel-logs-")
	if err != nil {
		return nil, fmt.Errorf("--log-files=false: making a memory directory for the log tails: %w", err)
	}
	if err := os.Symlink(dir, link); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("--log-files=false: linking %s: %w", link, err)
	}
	for _, a := range apps {
		if a.LogMaxSize <= 0 || a.LogMaxSize > memLogMaxSize {
			a.LogMaxSize = memLogMaxSize
		}
		a.LogKeep = memLogKeep
		a.LogsUntilRead = true
	}
	return func() {
		os.Remove(link)
		os.RemoveAll(dir)
	}, nil
}
