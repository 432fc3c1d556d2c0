package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// Config wires a Supervisor to the world.
type Config struct {
	Spawner Spawner
	Store   Store        // nil: nothing is persisted
	Clock   Clock        // nil: the wall clock
	Logger  *slog.Logger // nil: discard
	// OnExit hears about every exit, in order, from a goroutine of its own;
	// it may block without stalling the supervisor. nil: nobody listens.
	OnExit func(ExitInfo)
	// Serving hears, for an app, every change of the slots whose instance
	// takes connections: it has a process that is ready and that keel has
	// not asked to stop, that has not said it is stopping or crashing, and
	// that has not exited. slots is the whole set, in ascending order,
	// and is the callee's; nil once none serves (and after a delete). It
	// is called from the supervisor's own goroutine and must not block
	// or call back into the Supervisor. nil: nobody listens.
	Serving func(app string, slots []int)
}

// ExitInfo describes one process exit to OnExit.
type ExitInfo struct {
	App      string
	Instance int
	Pid      int
	Started  time.Time
	Exit     spec.Exit
	// CrashText is the fatal error the process printed when it reported a
	// graceful crash (EventCrashing); "" if it reported none.
	CrashText string
	Spec      *spec.App // a copy, as the process ran
	// Restarting says whether keel will start the instance again.
	Restarting bool
}

// InstanceInfo is a snapshot of one instance.
type InstanceInfo struct {
	App        string
	Instance   int
	Pid        int // 0 when not running
	Status     Status
	Restarts   int
	Started    time.Time // zero when not running
	LastExit   *spec.Exit
	Reason     string // why errored or waiting
	StatusText string // the app's last STATUS=
}

// AppInfo is a snapshot of one app.
type AppInfo struct {
	Spec    *spec.App
	Stopped bool // desired state
	// ReadyOnce says the app has had ReadyNeed instances online together
	// at least once.
	ReadyOnce bool
	Instances []InstanceInfo
	Exits     []ExitRecord
	// Deploying is the definition an apply is rolling out, instance by
	// instance, while Spec is still the app's; nil when none is.
	Deploying *spec.App
}

// ErrClosing refuses a command that would start processes once StopAll
// began.
var ErrClosing = errors.New("keel is stopping every app; nothing new starts")

// ErrClosed is returned by calls made after Run has returned.
var ErrClosed = errors.New("supervisor is shut down")

// Supervisor runs apps. Every piece of its state is owned by the goroutine
// running Run; the exported methods send it closures and wait for replies,
// so they are safe to call concurrently from any goroutine.
type Supervisor struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	inbox chan func()
	// events carries Notifier processes' events to the owner (Run).
	events *queue[func()]
	done   chan struct{}

	// Owned by the Run goroutine.
	apps map[string]*app
	// applying: an Apply is under way (one at a time).
	applying bool
	// closing: StopAll began; nothing new starts.
	closing bool
	persist *persister
	exits   *queue[ExitInfo]
}

// New returns a Supervisor; call Run to bring it to life.
func New(cfg Config) *Supervisor {
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Supervisor{
		cfg:   cfg,
		log:   cfg.Logger,
		clock: cfg.Clock,
		inbox: make(chan func(), 64),
		done:  make(chan struct{}),
		apps:  map[string]*app{},
	}
}

// Run owns the supervisor's state until ctx is done. It first restores the
// apps in the Store and adopts the processes a previous daemon left running.
// When it returns, running processes are left running (their keepers
// outlive the daemon); use StopAll first to stop them.
func (s *Supervisor) Run(ctx context.Context) error {
	// Events of Notifier processes, forwarded to the owner by one
	// goroutine for all of them; closed after done, so that what it still
	// holds is dropped, not posted to a loop that has ended.
	s.events = newQueue(func(f func()) { s.post(f) })
	defer func() {
		close(s.done)
		s.events.close()
	}()
	if s.cfg.Store != nil {
		s.persist = newPersister(s.cfg.Store, func(err error) {
			s.log.Error("persisting state", "err", err)
		})
		defer s.persist.close()
	}
	if s.cfg.OnExit != nil {
		s.exits = newQueue(s.cfg.OnExit)
		defer s.exits.close()
	}
	if err := s.restore(ctx); err != nil {
		return fmt.Errorf("restoring apps: %w", err)
	}
	for {
		select {
		case f := <-s.inbox:
			f()
		case <-ctx.Done():
			return nil
		}
	}
}

// post hands f to the owner goroutine; false if the supervisor is gone.
func (s *Supervisor) post(f func()) bool {
	select {
	case s.inbox <- f:
		return true
	case <-s.done:
		return false
	}
}

// call runs f in the owner goroutine and waits for the result it sends on
// the reply channel it is given; f may reply later (from a continuation).
func call[T any](ctx context.Context, s *Supervisor, f func(reply func(T, error))) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	once := false
	reply := func(v T, err error) {
		if once {
			return
		}
		once = true
		ch <- result{v, err}
	}
	var zero T
	if !s.post(func() { f(reply) }) {
		return zero, ErrClosed
	}
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-s.done:
		return zero, ErrClosed
	}
}

// Start defines apps and starts them. An app whose name exists gets the
// new definition and its instances that are not running are started; it is
// an error if all of them already run. It returns once every process has
// been spawned (not necessarily ready).
func (s *Supervisor) Start(ctx context.Context, apps []*spec.App) ([]InstanceInfo, error) {
	for _, a := range apps {
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("app %q: %w", a.Name, err)
		}
	}
	return call(ctx, s, func(reply func([]InstanceInfo, error)) {
		if s.closing {
			reply(nil, ErrClosing)
			return
		}
		op := s.newOp(func(err error) { reply(s.snapshot(namesOf(apps)), err) })
		for _, a := range apps {
			s.startApp(a.Clone(), op)
		}
		op.arm()
	})
}

// Stop stops the target's instances gracefully and returns once they exited.
func (s *Supervisor) Stop(ctx context.Context, t spec.Target) ([]InstanceInfo, error) {
	return s.each(ctx, t, false, func(in *instance, op *op) { s.stopInstance(in, "stop", op) })
}

// Restart stops then starts the target's instances. reason is recorded on
// the exits ("restart" for a user's restart, or a trigger's name).
func (s *Supervisor) Restart(ctx context.Context, t spec.Target, reason string) ([]InstanceInfo, error) {
	if reason == "" {
		reason = "restart"
	}
	return s.each(ctx, t, true, func(in *instance, op *op) { s.restartInstance(in, reason, op) })
}

// Reload replaces the target's instances one at a time: start the new
// process, wait until it is ready, then stop the old one. If a new process
// fails, the old one keeps running and Reload returns the failure. An app
// that does not share sockets is restarted instead.
func (s *Supervisor) Reload(ctx context.Context, t spec.Target, reason string) ([]InstanceInfo, error) {
	if reason == "" {
		reason = "reload"
	}
	return s.eachApp(ctx, t, true, func(a *app, insts []*instance, op *op) {
		if !a.sharesSockets() {
			for _, in := range insts {
				s.restartInstance(in, reason, op)
			}
			return
		}
		s.rollingReload(insts, reason, op)
	})
}

// Scale sets an app's instance count: new instances start, surplus ones
// (the highest numbers) stop and are forgotten.
func (s *Supervisor) Scale(ctx context.Context, name string, n int) ([]InstanceInfo, error) {
	if n < 1 {
		return nil, fmt.Errorf("scaling %s: instance count must be at least 1, got %d", name, n)
	}
	return call(ctx, s, func(reply func([]InstanceInfo, error)) {
		if s.closing {
			reply(nil, ErrClosing)
			return
		}
		a, ok := s.apps[name]
		if !ok {
			reply(nil, &spec.NotFoundError{What: fmt.Sprintf("app %q", name)})
			return
		}
		op := s.newOp(func(err error) { reply(s.snapshot([]string{name}), err) })
		s.scaleApp(a, n, op)
		op.arm()
	})
}

// Delete stops the target's apps and forgets them. Instances cannot be
// deleted one by one; scale the app instead.
func (s *Supervisor) Delete(ctx context.Context, t spec.Target) ([]InstanceInfo, error) {
	if t.Instance >= 0 {
		return nil, fmt.Errorf("deleting %s: delete takes an app name or all; use scale to remove instances", t)
	}
	return call(ctx, s, func(reply func([]InstanceInfo, error)) {
		apps, err := s.resolveApps(t)
		if err != nil {
			reply(nil, err)
			return
		}
		before := s.snapshot(appNames(apps))
		op := s.newOp(func(err error) { reply(before, err) })
		for _, a := range apps {
			s.deleteApp(a, op)
		}
		op.arm()
	})
}

// StopAll stops every instance of every app, keeping their definitions
// (for `keel kill`: the next daemon starts nothing until told to). From
// then on, commands that would start processes (a restart trigger firing
// meanwhile, say) get ErrClosing, so nothing outlives the stop.
func (s *Supervisor) StopAll(ctx context.Context) error {
	if _, err := call(ctx, s, func(reply func(struct{}, error)) {
		s.closing = true
		reply(struct{}{}, nil)
	}); err != nil {
		return err
	}
	_, err := s.Stop(ctx, spec.All)
	var nf *spec.NotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

// List returns every instance, ordered by app name then instance number.
func (s *Supervisor) List(ctx context.Context) ([]InstanceInfo, error) {
	return call(ctx, s, func(reply func([]InstanceInfo, error)) {
		reply(s.snapshot(nil), nil)
	})
}

// Apps returns the target's apps with their instances and exit history.
func (s *Supervisor) Apps(ctx context.Context, t spec.Target) ([]AppInfo, error) {
	return call(ctx, s, func(reply func([]AppInfo, error)) {
		apps, err := s.resolveApps(t)
		if err != nil {
			reply(nil, err)
			return
		}
		out := make([]AppInfo, 0, len(apps))
		for _, a := range apps {
			var deploying *spec.App
			if a.deploying != nil {
				deploying = a.deploying.Clone()
			}
			out = append(out, AppInfo{
				Spec:      a.spec.Clone(),
				Stopped:   a.stopped,
				ReadyOnce: a.readyOnce,
				Instances: a.infos(),
				Exits:     append([]ExitRecord(nil), a.exits...),
				Deploying: deploying,
			})
		}
		reply(out, nil)
	})
}

// each runs f for every instance the target names, as one operation.
func (s *Supervisor) each(ctx context.Context, t spec.Target, starts bool, f func(*instance, *op)) ([]InstanceInfo, error) {
	return s.eachApp(ctx, t, starts, func(_ *app, insts []*instance, op *op) {
		for _, in := range insts {
			f(in, op)
		}
	})
}

// eachApp runs f, as one operation, for every app the target names with
// the app's instances it names. A command that starts processes (starts)
// is refused once StopAll began.
func (s *Supervisor) eachApp(ctx context.Context, t spec.Target, starts bool, f func(*app, []*instance, *op)) ([]InstanceInfo, error) {
	return call(ctx, s, func(reply func([]InstanceInfo, error)) {
		if starts && s.closing {
			reply(nil, ErrClosing)
			return
		}
		apps, err := s.resolveApps(t)
		if err != nil {
			reply(nil, err)
			return
		}
		op := s.newOp(func(err error) { reply(s.snapshot(appNames(apps)), err) })
		for _, a := range apps {
			insts, err := a.select_(t)
			if err != nil {
				op.fail(err)
				continue
			}
			f(a, insts, op)
		}
		op.arm()
	})
}

func (s *Supervisor) resolveApps(t spec.Target) ([]*app, error) {
	if t.IsAll() {
		names := make([]string, 0, len(s.apps))
		for n := range s.apps {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) == 0 {
			return nil, &spec.NotFoundError{What: "no apps:"}
		}
		out := make([]*app, 0, len(names))
		for _, n := range names {
			out = append(out, s.apps[n])
		}
		return out, nil
	}
	a, ok := s.apps[t.App]
	if !ok {
		return nil, &spec.NotFoundError{What: fmt.Sprintf("app %q", t.App)}
	}
	return []*app{a}, nil
}

// snapshot lists the instances of the named apps (all when names is nil).
func (s *Supervisor) snapshot(names []string) []InstanceInfo {
	if names == nil {
		for n := range s.apps {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []InstanceInfo
	for _, n := range names {
		if a, ok := s.apps[n]; ok {
			out = append(out, a.infos()...)
		}
	}
	return out
}

func namesOf(apps []*spec.App) []string {
	out := make([]string, len(apps))
	for i, a := range apps {
		out[i] = a.Name
	}
	return out
}

func appNames(apps []*app) []string {
	out := make([]string, len(apps))
	for i, a := range apps {
		out[i] = a.spec.Name
	}
	return out
}

// op counts the pieces of one command still under way and replies once,
// when the last finishes, with the first error. Owned by the Run goroutine.
type op struct {
	pending int
	armed   bool
	err     error
	reply   func(error)
}

func (s *Supervisor) newOp(reply func(error)) *op { return &op{reply: reply} }

// add registers one more piece; the returned func finishes it.
func (o *op) add() func(error) {
	if o == nil {
		return func(error) {}
	}
	o.pending++
	finished := false
	return func(err error) {
		if finished {
			return
		}
		finished = true
		if err != nil && o.err == nil {
			o.err = err
		}
		o.pending--
		o.maybeReply()
	}
}

func (o *op) fail(err error) {
	if o != nil && o.err == nil {
		o.err = err
	}
}

// arm is called once every piece has been added.
func (o *op) arm() {
	o.armed = true
	o.maybeReply()
}

func (o *op) maybeReply() {
	if o.armed && o.pending == 0 && o.reply != nil {
		r := o.reply
		o.reply = nil
		r(o.err)
	}
}
