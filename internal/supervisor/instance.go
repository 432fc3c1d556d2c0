package supervisor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// app is one app definition and its instances. Owned by the Run goroutine,
// like everything below.
type app struct {
	spec     *spec.App
	stopped  bool        // desired: the user stopped the whole app
	insts    []*instance // ordered by number
	exits    []ExitRecord
	deleting bool
	// deploying is the definition an apply is rolling out (rollOut).
	deploying *spec.App
	// readyOnce: at some moment ReadyNeed instances were online together
	// (keel run's /startupz).
	readyOnce bool
	// readyHist and reloadHist feed /metrics (see metrics.go).
	readyHist, reloadHist Histogram
	// served is the serving slots as last published (Config.Serving).
	served []int
}

// instance is one numbered slot of an app. Its intent flags (wantStopped,
// restartPending, removed) decide what happens when its process exits.
type instance struct {
	app        *app
	num        int
	status     Status
	reason     string
	statusText string
	restarts   int
	started    bool // has ever been started (the first start is not a restart)
	lastExit   *spec.Exit
	unstable   int // unstable runs in a row
	// restartsBy counts restarts by reason (RestartReasons);
	// restartReason is the reason noted for the next run, "" for a crash.
	restartsBy    [len(RestartReasons)]uint64
	restartReason string

	cur *run // the process serving (or starting)
	// sp is the definition cur runs when it is not the app's (an apply
	// rolling a new definition out, until it is the app's); nil: the app's.
	sp   *spec.App
	next *run // a reload's new process, until it is ready
	// draining are processes that crashed gracefully (EventCrashing): no
	// longer the instance's, already replaced, finishing their requests.
	draining []*run

	backoff        Timer
	wantStopped    bool
	restartPending bool
	removed        bool
	// spawnWaiters hear the outcome of the next spawn of cur.
	spawnWaiters []func(error)
}

// run is one process of an instance, from spawn to exit.
type run struct {
	inst *instance
	sp   *spec.App // the definition it runs
	// paths are where sp's cwd and script led when it was spawned (or
	// adopted): a deploy may switch a link under an unchanged definition.
	paths      spec.Paths
	p          Process // nil while spawning
	started    time.Time
	spawnedAt  time.Time // when this daemon asked for it; zero if adopted
	ready      bool
	readyTimer Timer
	stopReason string // set when keel asked it to stop
	stopAsked  bool   // Stop was requested (maybe before spawn finished)
	stopSent   bool
	failed     string // why the run counts as a failed start
	exited     bool
	// crashed: the process reported a graceful crash and was taken off
	// the instance (see crashing); restarting is what was decided then.
	crashed bool
	// crashText is the fatal error the process reported with its graceful
	// crash (the first one), for ExitInfo.
	crashText  string
	restarting bool
	// quitting: the app said it stops taking connections (stopping or
	// crashing).
	quitting bool
	// onReady is a reload's continuation for next: nil error once ready.
	onReady func(error)
	// waiters hear the exit.
	waiters []func(spec.Exit)
}

func newApp(sp *spec.App) *app { return &app{spec: sp} }

// addInstance adds an instance in the lowest slot no instance holds,
// keeping insts ordered by number.
func (a *app) addInstance() *instance {
	num := 0
	for _, x := range a.insts {
		if x.num != num {
			break
		}
		num++
	}
	in := &instance{app: a, num: num}
	a.insts = slices.Insert(a.insts, num, in)
	return in
}

// select_ returns the instances a target names within this app.
func (a *app) select_(t spec.Target) ([]*instance, error) {
	if t.Instance < 0 {
		return append([]*instance(nil), a.insts...), nil
	}
	for _, in := range a.insts {
		if in.num == t.Instance && !in.removed {
			return []*instance{in}, nil
		}
	}
	return nil, &spec.NotFoundError{What: fmt.Sprintf("instance %s:%d", a.spec.Name, t.Instance)}
}

// sharesSockets reports whether the app's instances share listening
// sockets that keel holds, which is what makes a rolling reload lossless:
// its `listen` sockets, or — for a Node app — every port it listens on.
func (a *app) sharesSockets() bool {
	return len(a.spec.Listen) > 0 || a.spec.IsNode()
}

func (a *app) infos() []InstanceInfo {
	out := make([]InstanceInfo, 0, len(a.insts))
	for _, in := range a.insts {
		out = append(out, in.info())
	}
	return out
}

func (in *instance) info() InstanceInfo {
	i := InstanceInfo{
		App:        in.app.spec.Name,
		Instance:   in.num,
		Status:     in.status,
		Restarts:   in.restarts,
		Reason:     in.reason,
		StatusText: in.statusText,
	}
	if in.lastExit != nil {
		e := *in.lastExit
		i.LastExit = &e
	}
	if r := in.cur; r != nil && r.p != nil {
		i.Pid = r.p.Pid()
		i.Started = r.started
	}
	return i
}

func (s *Supervisor) setStatus(in *instance, to Status, reason string) {
	if !CanChange(in.status, to) {
		s.log.Error("status change not allowed", "app", in.app.spec.Name, "instance", in.num,
			"from", in.status.String(), "to", to.String())
	}
	in.status = to
	in.reason = reason
	if to == Online && !in.app.readyOnce {
		online := 0
		for _, other := range in.app.insts {
			if other.status == Online {
				online++
			}
		}
		in.app.readyOnce = online >= in.app.spec.ReadyNeed()
	}
	if to == Stopped || to == Errored {
		in.statusText = ""
		var err error
		if to == Errored {
			err = fmt.Errorf("%s:%d errored: %s", in.app.spec.Name, in.num, reason)
		}
		s.flushSpawnWaiters(in, err)
	}
}

func (s *Supervisor) flushSpawnWaiters(in *instance, err error) {
	ws := in.spawnWaiters
	in.spawnWaiters = nil
	for _, w := range ws {
		w(err)
	}
}

func (s *Supervisor) cancelBackoff(in *instance) {
	if in.backoff != nil {
		in.backoff.Stop()
		in.backoff = nil
	}
}

// startApp defines (or redefines) an app and starts what is not running.
func (s *Supervisor) startApp(sp *spec.App, o *op) {
	a, exists := s.apps[sp.Name]
	if exists {
		if a.deleting {
			o.fail(fmt.Errorf("app %q is being deleted; try again when it is gone", sp.Name))
			return
		}
		idle := 0
		for _, in := range a.insts {
			if in.cur == nil {
				idle++
			}
		}
		if idle == 0 && len(a.insts) == sp.Instances {
			o.fail(fmt.Errorf("app %q is already running; use keel restart or keel reload to apply changes", sp.Name))
			return
		}
		a.spec = sp
		a.stopped = false
		for _, in := range a.insts {
			if in.cur == nil && !in.removed {
				s.startIdle(in, o)
			}
		}
		s.scaleApp(a, sp.Instances, o)
		return
	}
	a = newApp(sp)
	s.apps[sp.Name] = a
	for i := 0; i < sp.Instances; i++ {
		s.startIdle(a.addInstance(), o)
	}
	s.save(a)
}

// startIdle starts an instance that has no process, cancelling any backoff.
func (s *Supervisor) startIdle(in *instance, o *op) {
	in.wantStopped = false
	in.restartPending = false
	in.unstable = 0
	s.cancelBackoff(in)
	noteRestart(in, "start")
	in.spawnWaiters = append(in.spawnWaiters, o.add())
	s.spawnCur(in)
}

// spawnCur starts a process as the instance's current one.
func (s *Supervisor) spawnCur(in *instance) {
	r := s.newRun(in)
	in.cur = r
	s.setStatus(in, Starting, "")
	s.startRun(r)
}

func (s *Supervisor) newRun(in *instance) *run {
	if in.started {
		in.restarts++
		s.countRestart(in)
	}
	in.restartReason = ""
	in.started = true
	return &run{inst: in, sp: in.spec()}
}

// runs notes the definition the instance's processes run from now on.
func (in *instance) runs(sp *spec.App) {
	if sp == in.app.spec {
		in.sp = nil
	} else {
		in.sp = sp
	}
}

// spec is the definition the instance's processes run.
func (in *instance) spec() *spec.App {
	if in.sp != nil {
		return in.sp
	}
	return in.app.spec
}

// startRun asks the Spawner for the process in a goroutine of its own (a
// spawn may take milliseconds) and resumes in spawned.
func (s *Supervisor) startRun(r *run) {
	in := r.inst
	r.spawnedAt = s.clock.Now()
	req := SpawnRequest{App: r.sp.Clone(), Instance: in.num, Restarts: in.restarts}
	go func() {
		paths := spec.ResolvePaths(req.App)
		p, err := s.cfg.Spawner.Spawn(context.Background(), req)
		if !s.post(func() { r.paths = paths; s.spawned(r, p, err) }) && p != nil {
			// The supervisor is gone; the process runs on under its keeper
			// and the next daemon adopts it.
			go drain(p)
		}
	}()
}

func drain(p Process) {
	for range p.Events() {
	}
}

func (s *Supervisor) spawned(r *run, p Process, err error) {
	in := r.inst
	if err != nil {
		err = fmt.Errorf("starting %s:%d: %w", in.app.spec.Name, in.num, err)
		s.log.Error("spawn failed", "app", in.app.spec.Name, "instance", in.num, "err", err)
		r.exited = true
		switch r {
		case in.next:
			in.next = nil
			s.finishReady(r, err)
		case in.cur:
			in.cur = nil
			if in.removed || in.wantStopped {
				s.setStatus(in, Stopped, "")
			} else {
				s.setStatus(in, Errored, "start failed: "+err.Error())
			}
		}
		s.save(in.app)
		return
	}
	if r == in.cur {
		s.flushSpawnWaiters(in, nil)
	}
	s.attach(r, p)
	s.save(in.app)
}

// attach binds a started (or adopted) process to its run: its events flow
// into the owner loop, and its readiness is awaited.
func (s *Supervisor) attach(r *run, p Process) {
	r.p = p
	r.started = p.Started()
	if n, ok := p.(Notifier); ok {
		n.Notify(func(ev Event) { s.events.push(func() { s.onEvent(r, ev) }) })
	} else {
		go func() {
			for ev := range p.Events() {
				if !s.post(func() { s.onEvent(r, ev) }) {
					drain(p)
					return
				}
			}
		}()
	}
	if r.stopAsked {
		s.sendStop(r)
		return
	}
	if r.sp.Ready == spec.ReadyNone {
		s.markReady(r)
		return
	}
	d := r.sp.ReadyTimeout.D()
	r.readyTimer = s.clock.AfterFunc(d, func() {
		s.post(func() { s.readyTimedOut(r, d) })
	})
}

func (s *Supervisor) onEvent(r *run, ev Event) {
	in := r.inst
	switch ev.Kind {
	case EventReady:
		s.markReady(r)
	case EventStatus:
		if r == in.cur {
			in.statusText = ev.Text
		}
	case EventStopping:
		r.quitting = true
		s.publishServing(in.app)
	case EventCrashing:
		if r.crashText == "" {
			r.crashText = ev.Text
		}
		s.crashing(r)
	case EventExit:
		s.exited(r, ev.Exit)
	}
}

// crashing handles a graceful crash: the process stopped taking
// connections, finishes the requests it has and will exit with a failure
// within kill_timeout. The instance does now what it would do at that
// exit — the restart policy, min_uptime, max_restarts and the backoff
// apply as to any crash — so the replacement starts without waiting for
// the old process; the exit, when it comes, is only recorded. One
// exception to the backoff: if no other instance of the app is starting
// or serving, the replacement starts at once, so that a crash storm never
// leaves an app that should run with nothing (max_restarts still ends
// it). A process keel asked to stop, or a reload's new process, is left
// to its exit as before.
func (s *Supervisor) crashing(r *run) {
	in := r.inst
	// Whatever happens next, it takes no new connections.
	r.quitting = true
	s.publishServing(in.app)
	if r != in.cur || r.exited || r.stopAsked || r.crashed || in.restartPending ||
		in.removed || in.wantStopped || in.app.stopped {
		return
	}
	r.crashed = true
	if r.readyTimer != nil {
		r.readyTimer.Stop()
		r.readyTimer = nil
	}
	in.cur = nil
	in.draining = append(in.draining, r)
	code := 1
	r.restarting = s.afterExit(in, r, spec.Exit{Code: &code, At: s.clock.Now()})
	if in.status == Waiting && !s.othersUp(in) {
		s.cancelBackoff(in)
		s.spawnCur(in)
	}
	s.save(in.app)
}

// othersUp reports whether another instance of in's app has a process
// starting or serving that keel has not asked to stop.
func (s *Supervisor) othersUp(in *instance) bool {
	for _, o := range in.app.insts {
		if o != in && !o.removed && o.cur != nil && !o.cur.stopAsked {
			return true
		}
	}
	return false
}

func (s *Supervisor) markReady(r *run) {
	if r.ready || r.exited {
		return
	}
	r.ready = true
	if r.readyTimer != nil {
		r.readyTimer.Stop()
		r.readyTimer = nil
	}
	s.observeReady(r)
	in := r.inst
	switch r {
	case in.cur:
		if in.status == Starting {
			s.setStatus(in, Online, "")
		}
	case in.next:
		s.finishReady(r, nil)
	}
	s.publishServing(in.app)
}

func (s *Supervisor) finishReady(r *run, err error) {
	if f := r.onReady; f != nil {
		r.onReady = nil
		f(err)
	}
}

func (s *Supervisor) readyTimedOut(r *run, d time.Duration) {
	if r.ready || r.exited {
		return
	}
	in := r.inst
	r.failed = fmt.Sprintf("not ready within ready_timeout %s", d)
	s.log.Warn("instance not ready in time", "app", in.app.spec.Name, "instance", in.num, "timeout", d)
	if r == in.next {
		in.next = nil
		s.finishReady(r, fmt.Errorf("%s", r.failed))
	}
	s.stopRun(r, "ready_timeout")
}

// stopRun asks a run's process to stop gracefully; the keeper escalates to
// SIGKILL after kill_timeout. Safe to call more than once.
func (s *Supervisor) stopRun(r *run, reason string) {
	if r.exited {
		return
	}
	if !r.stopAsked {
		r.stopAsked = true
		r.stopReason = reason
		// New connections go elsewhere before it is told to stop.
		s.publishServing(r.inst.app)
	}
	if r.p != nil {
		s.sendStop(r)
	}
}

func (s *Supervisor) sendStop(r *run) {
	if r.stopSent {
		return
	}
	r.stopSent = true
	if r.readyTimer != nil {
		r.readyTimer.Stop()
		r.readyTimer = nil
	}
	sp := r.sp
	if err := r.p.Stop(sp.Signal(), sp.KillTimeout.D()); err != nil {
		// The process side is gone; its exit (keeper lost) follows.
		s.log.Warn("stop request failed", "app", sp.Name, "instance", r.inst.num, "err", err)
	}
}

// exited handles a process's exit: records it, then decides from the
// instance's intent what comes next.
func (s *Supervisor) exited(r *run, ex spec.Exit) {
	if r.exited {
		return
	}
	r.exited = true
	if r.readyTimer != nil {
		r.readyTimer.Stop()
		r.readyTimer = nil
	}
	in, a := r.inst, r.inst.app
	if r.stopReason != "" && ex.Reason == "" {
		ex.Reason = r.stopReason
	}
	pid := r.p.Pid()
	e := ex
	in.lastExit = &e
	a.exits = append(a.exits, ExitRecord{Instance: in.num, Pid: pid, Exit: ex})
	if len(a.exits) > maxExits {
		a.exits = append([]ExitRecord(nil), a.exits[len(a.exits)-maxExits:]...)
	}
	restarting := false
	switch r {
	case in.next:
		in.next = nil
		s.finishReady(r, fmt.Errorf("new process exited with %s before it was ready", ex))
	case in.cur:
		in.cur = nil
		restarting = s.afterExit(in, r, ex)
	}
	if r.crashed {
		in.draining = slices.DeleteFunc(in.draining, func(x *run) bool { return x == r })
		restarting = r.restarting
	}
	s.publishServing(a)
	for _, w := range r.waiters {
		w(ex)
	}
	r.waiters = nil
	r.p.Release()
	if s.exits != nil {
		s.exits.push(ExitInfo{
			App: a.spec.Name, Instance: in.num, Pid: pid, Started: r.started,
			Exit: ex, CrashText: r.crashText, Spec: r.sp.Clone(), Restarting: restarting,
		})
	}
	if !a.deleting {
		s.save(a)
	}
}

// afterExit applies the instance's intent, then the restart policy, to the
// exit of its current process. It reports whether a restart follows.
func (s *Supervisor) afterExit(in *instance, r *run, ex spec.Exit) bool {
	sp := in.app.spec
	switch {
	case in.removed || in.wantStopped || in.app.stopped:
		s.setStatus(in, Stopped, "")
		return false
	case in.restartPending:
		in.restartPending = false
		in.unstable = 0
		s.spawnCur(in)
		return true
	case ex.Code != nil && sp.StopsOn(*ex.Code):
		s.setStatus(in, Stopped, fmt.Sprintf("exited with %s, one of stop_exit_codes", ex))
		return false
	case sp.Restart == spec.RestartNever:
		s.setStatus(in, Stopped, fmt.Sprintf("exited with %s; restart is never", ex))
		return false
	case sp.Restart == spec.RestartOnFailure && ex.Clean():
		s.setStatus(in, Stopped, "exited cleanly; restart is on-failure")
		return false
	}
	// Uptime ends when the process exited, not when the exit reached this
	// loop: an exit that waited in a busy keeper, or happened while no
	// daemon ran, is not time the process stayed up.
	end := s.clock.Now()
	if !ex.At.IsZero() && ex.At.After(r.started) && ex.At.Before(end) {
		end = ex.At
	}
	uptime := end.Sub(r.started)
	if uptime < sp.MinUptime.D() || r.failed != "" {
		in.unstable++
	} else {
		in.unstable = 0
	}
	if in.unstable > sp.MaxRestarts {
		why := fmt.Sprintf("exited with %s", ex)
		if r.failed != "" {
			why = r.failed
		}
		s.setStatus(in, Errored, fmt.Sprintf("gave up after %d unstable runs in a row (each under min_uptime %s; last %s); fix it, then keel restart %s",
			in.unstable, sp.MinUptime, why, sp.Name))
		return false
	}
	if in.unstable == 0 {
		s.spawnCur(in)
		return true
	}
	delay := Backoff(sp.RestartDelay.D(), sp.BackoffMax.D(), in.unstable)
	why := fmt.Sprintf("exited with %s", ex)
	if r.failed != "" {
		why = r.failed
	}
	s.setStatus(in, Waiting, fmt.Sprintf("%s after %s; restarting in %s (unstable run %d of at most %d)",
		why, uptime.Round(time.Millisecond), delay, in.unstable, sp.MaxRestarts))
	var t Timer
	t = s.clock.AfterFunc(delay, func() {
		s.post(func() {
			if in.backoff != t || in.status != Waiting {
				return
			}
			in.backoff = nil
			s.spawnCur(in)
		})
	})
	in.backoff = t
	return true
}

// Backoff is the delay before the n-th unstable restart in a row (n ≥ 1):
// base doubled n-1 times, at most max.
func Backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// stopInstance stops an instance and keeps it stopped.
func (s *Supervisor) stopInstance(in *instance, reason string, o *op) {
	in.wantStopped = true
	in.restartPending = false
	s.cancelBackoff(in)
	if n := in.next; n != nil {
		in.next = nil
		s.finishReady(n, fmt.Errorf("%s:%d was stopped during the reload", in.app.spec.Name, in.num))
		s.stopRun(n, reason)
	}
	for _, d := range in.draining {
		// Hurried along (the kill signal, then SIGKILL after kill_timeout),
		// but its exit stays the crash it is: no stop reason.
		done := o.add()
		d.waiters = append(d.waiters, func(spec.Exit) { done(nil) })
		if d.p != nil {
			s.sendStop(d)
		}
	}
	r := in.cur
	if r == nil {
		if in.status != Stopped {
			s.setStatus(in, Stopped, "")
		}
		s.save(in.app)
		return
	}
	done := o.add()
	r.waiters = append(r.waiters, func(spec.Exit) { done(nil) })
	if in.status != Stopping {
		s.setStatus(in, Stopping, "")
	}
	s.stopRun(r, reason)
}

// restartInstance stops the instance's process (if any) and starts a new one.
func (s *Supervisor) restartInstance(in *instance, reason string, o *op) {
	if in.removed {
		return
	}
	in.app.stopped = false
	in.wantStopped = false
	s.cancelBackoff(in)
	r := in.cur
	if r == nil {
		noteRestart(in, reason)
		s.startIdle(in, o)
		s.save(in.app)
		return
	}
	in.restartPending = true
	noteRestart(in, reason)
	in.spawnWaiters = append(in.spawnWaiters, o.add())
	if in.status != Stopping {
		s.setStatus(in, Stopping, "")
	}
	s.stopRun(r, reason)
}

// rollingReload replaces instances one after another; see Reload.
func (s *Supervisor) rollingReload(insts []*instance, reason string, o *op) {
	done := o.add()
	began := s.clock.Now()
	var step func(i int)
	step = func(i int) {
		if i == len(insts) {
			if len(insts) > 0 {
				insts[0].app.reloadHist.observe(s.clock.Now().Sub(began))
			}
			done(nil)
			return
		}
		s.reloadOne(insts[i], nil, reason, o, func(err error) {
			if err != nil {
				done(err)
				return
			}
			step(i + 1)
		})
	}
	step(0)
}

// reloadOne starts a new process for in, running to (nil: the definition
// the instance runs now), waits for it to be ready, makes it current and
// stops the old one. then hears the outcome of the swap; the old process's
// exit is a piece of o of its own.
func (s *Supervisor) reloadOne(in *instance, to *spec.App, reason string, o *op, then func(error)) {
	name := fmt.Sprintf("%s:%d", in.app.spec.Name, in.num)
	if in.removed {
		then(nil)
		return
	}
	if in.next != nil {
		then(fmt.Errorf("reloading %s: a reload is already in progress", name))
		return
	}
	if in.cur == nil || in.cur.stopAsked {
		// Nothing serves: a plain start is as good as a reload.
		in.app.stopped = false
		if in.cur == nil {
			if to != nil {
				in.runs(to)
			}
			s.startIdle(in, o)
		}
		then(nil)
		return
	}
	noteRestart(in, reason)
	r := s.newRun(in)
	if to != nil {
		r.sp = to
	}
	in.next = r
	r.onReady = func(err error) {
		if err != nil {
			err = fmt.Errorf("reloading %s: %w; the old process keeps serving", name, err)
			then(&InstanceError{App: in.app.spec.Name, Instance: in.num, Since: r.spawnedAt, Err: err})
			s.save(in.app)
			return
		}
		old := in.cur
		in.next = nil
		in.cur = r
		in.runs(r.sp)
		in.unstable = 0
		if in.status != Online {
			s.setStatus(in, Online, "")
		}
		if old != nil {
			oldDone := o.add()
			old.waiters = append(old.waiters, func(spec.Exit) { oldDone(nil) })
			s.stopRun(old, reason)
		}
		s.save(in.app)
		then(nil)
	}
	s.startRun(r)
}

// scaleApp grows or shrinks an app to n instances.
func (s *Supervisor) scaleApp(a *app, n int, o *op) {
	a.spec.Instances = n
	live := 0
	for _, in := range a.insts {
		if !in.removed {
			live++
		}
	}
	// A slot whose instance a scale-down is still stopping is taken back
	// first, lowest first: the instance stays, and starts again once its
	// process exited (two processes never share a slot and its socket).
	for _, in := range a.insts {
		if live >= n {
			break
		}
		if in.removed {
			s.reviveInstance(in, o)
			live++
		}
	}
	for live < n {
		in := a.addInstance()
		live++
		if a.stopped {
			s.setStatus(in, Stopped, "")
			continue
		}
		s.startIdle(in, o)
	}
	// The highest numbers go.
	for i := len(a.insts) - 1; i >= 0 && live > n; i-- {
		if in := a.insts[i]; !in.removed {
			s.removeInstance(a, in, "scale", o)
			live--
		}
	}
	s.save(a)
}

// reviveInstance takes back an instance a scale-down is still removing:
// it restarts once its process exited (or stays stopped with its app).
func (s *Supervisor) reviveInstance(in *instance, o *op) {
	in.removed = false
	if in.app.stopped {
		// Its stop goes on; it stays, stopped.
		return
	}
	s.restartInstance(in, "scale", o)
}

// removeInstance stops an instance and drops it from its app.
func (s *Supervisor) removeInstance(a *app, in *instance, reason string, o *op) {
	in.removed = true
	drop := func() {
		if !in.removed {
			return // taken back by a scale-up meanwhile
		}
		for i, x := range a.insts {
			if x == in {
				a.insts = append(a.insts[:i], a.insts[i+1:]...)
				break
			}
		}
		s.save(a)
	}
	if in.cur == nil && in.next == nil && len(in.draining) == 0 {
		s.cancelBackoff(in)
		s.setStatus(in, Stopped, "")
		drop()
		return
	}
	done := o.add()
	// Dropped once its every process exited.
	sub := s.newOp(func(error) { drop(); done(nil) })
	s.stopInstance(in, reason, sub)
	sub.arm()
}

// deleteApp stops every instance of an app, then forgets it.
func (s *Supervisor) deleteApp(a *app, o *op) {
	a.deleting = true
	a.stopped = true
	done := o.add()
	sub := s.newOp(func(err error) {
		delete(s.apps, a.spec.Name)
		if s.persist != nil {
			s.persist.put(a.spec.Name, nil)
		}
		done(err)
	})
	for _, in := range append([]*instance(nil), a.insts...) {
		s.removeInstance(a, in, "delete", sub)
	}
	sub.arm()
}

// save hands the app's current record to the persister.
func (s *Supervisor) save(a *app) {
	if s.persist == nil || a.deleting {
		return
	}
	rec := &AppRecord{Spec: a.spec.Clone(), Stopped: a.stopped, Exits: append([]ExitRecord(nil), a.exits...)}
	for _, in := range a.insts {
		if in.removed {
			continue
		}
		ir := InstanceRecord{Instance: in.num, Restarts: in.restarts, Stopped: in.wantStopped || in.status == Stopped}
		if in.status == Errored {
			ir.Errored = in.reason
		}
		if in.lastExit != nil {
			e := *in.lastExit
			ir.LastExit = &e
		}
		rec.Instances = append(rec.Instances, ir)
	}
	s.persist.put(a.spec.Name, rec)
}
