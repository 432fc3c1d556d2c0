package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// ApplyMode says how Apply replaces the processes of an app whose
// definition changed.
type ApplyMode int

const (
	// ApplyRestart stops an app's processes, then starts them anew
	// (`keel start FILE`, `keel restart FILE`).
	ApplyRestart ApplyMode = iota
	// ApplyReload replaces them one at a time, each new process ready
	// before the old one stops, and rolls back on a failure (`keel reload
	// FILE`). An app that shares no sockets, or whose sockets change, is
	// restarted instead, as Reload does.
	ApplyReload
)

// ApplyOptions tune Apply.
type ApplyOptions struct {
	Mode ApplyMode
	// Prune deletes the apps that the applied set does not name.
	Prune bool
	// DryRun plans and changes nothing.
	DryRun bool
}

// What Apply plans for an app (AppChange.Action).
const (
	ActionStart     = "start"     // not defined yet
	ActionUnchanged = "unchanged" // same definition, same count
	ActionScale     = "scale"     // only the instance count differs
	ActionReplace   = "replace"   // the processes must be replaced
	ActionDelete    = "delete"    // pruned
)

// AppChange is one app's part of an apply: the plan, then what was done.
type AppChange struct {
	App     string
	Action  string        // one of the Action constants
	Changes []spec.Change // for ActionReplace: what differs
	From    int           // instances before (0 for a new app)
	To      int           // instances after (0 when deleted)
	// Done says what happened: "started", "unchanged", "scaled",
	// "reloaded", "restarted", "deleted", "rolled back" or "failed"; ""
	// in a dry run.
	Done string
	Err  error // why Done is "rolled back" or "failed"
}

// InstanceError is a failure of one instance's new process (it crashed or
// was not ready in time during a reload): it names the process so that
// its logs since Since can be shown.
type InstanceError struct {
	App      string
	Instance int
	Since    time.Time // when the failing process was spawned
	Err      error
}

func (e *InstanceError) Error() string { return e.Err.Error() }
func (e *InstanceError) Unwrap() error { return e.Err }

// ErrApplying refuses an apply while another one is under way.
var ErrApplying = errors.New("another apply is in progress; run the command again once it has finished")

// Apply makes the running apps match apps, app by app: an app not defined
// yet is started; an unchanged one is left alone (its instances that are
// not running are started); one whose instance count alone changed is
// scaled; any other change replaces its processes as o.Mode says. With
// o.Prune, apps that apps does not name are deleted. A rolling
// replacement that fails (a new process crashes or is not ready within
// ready_timeout) stops there: the instances already replaced are rolled
// back to the old definition, which stays the app's, and the app's
// AppChange says "rolled back" with an *InstanceError naming the process
// that failed. One apply runs at a time: another one meanwhile gets
// ErrApplying. Apply returns once every piece finished, with one
// AppChange per app, in the order of apps then pruned apps by name; the
// error is the first failure.
func (s *Supervisor) Apply(ctx context.Context, apps []*spec.App, o ApplyOptions) ([]AppChange, error) {
	for _, a := range apps {
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("app %q: %w", a.Name, err)
		}
	}
	return call(ctx, s, func(reply func([]AppChange, error)) {
		if s.closing && !o.DryRun {
			reply(nil, ErrClosing)
			return
		}
		if s.applying {
			reply(nil, ErrApplying)
			return
		}
		plan := s.plan(apps, o.Prune)
		if o.DryRun {
			reply(plan, nil)
			return
		}
		s.applying = true
		op := s.newOp(func(err error) {
			s.applying = false
			reply(plan, err)
		})
		for i := range plan {
			var sp *spec.App
			if i < len(apps) {
				sp = apps[i].Clone()
			}
			s.applyApp(&plan[i], sp, o.Mode, op)
		}
		op.arm()
	})
}

// plan compares apps with what runs.
func (s *Supervisor) plan(apps []*spec.App, prune bool) []AppChange {
	out := make([]AppChange, 0, len(apps))
	named := map[string]bool{}
	for _, sp := range apps {
		named[sp.Name] = true
		c := AppChange{App: sp.Name, To: sp.Instances}
		a, ok := s.apps[sp.Name]
		switch {
		case !ok:
			c.Action = ActionStart
		default:
			c.From = a.live()
			c.Changes = spec.Diff(a.spec, sp)
			if len(c.Changes) == 0 {
				c.Changes = a.movedPaths(sp)
			}
			switch {
			case len(c.Changes) > 0:
				c.Action = ActionReplace
			case c.From != c.To:
				c.Action = ActionScale
			default:
				c.Action = ActionUnchanged
			}
		}
		out = append(out, c)
	}
	if prune {
		var gone []string
		for name := range s.apps {
			if !named[name] {
				gone = append(gone, name)
			}
		}
		sort.Strings(gone)
		for _, name := range gone {
			out = append(out, AppChange{App: name, Action: ActionDelete, From: s.apps[name].live()})
		}
	}
	return out
}

// movedPaths reports how sp's cwd and script, resolved now, differ from
// where a running process of the app was spawned: a release link switched
// under the same definition.
func (a *app) movedPaths(sp *spec.App) []spec.Change {
	now := spec.ResolvePaths(sp)
	for _, in := range a.insts {
		if r := in.cur; r != nil && !in.removed {
			if c := spec.PathChanges(r.paths, now); len(c) > 0 {
				return c
			}
		}
	}
	return nil
}

// live counts the instances a scale-down is not removing.
func (a *app) live() int {
	n := 0
	for _, in := range a.insts {
		if !in.removed {
			n++
		}
	}
	return n
}

// applyApp carries out one app's planned change as a piece of o.
func (s *Supervisor) applyApp(c *AppChange, sp *spec.App, mode ApplyMode, o *op) {
	done := o.add()
	finish := func(what string, err error) {
		c.Done, c.Err = what, err
		if err != nil {
			c.Done = "failed"
			var ie *InstanceError
			if errors.As(err, &ie) {
				c.Done = "rolled back"
			}
		}
		done(err)
	}
	a := s.apps[c.App]
	if a != nil && a.deleting {
		finish("", fmt.Errorf("app %q is being deleted; try again when it is gone", c.App))
		return
	}
	// Each branch runs its commands as a sub-operation and finishes
	// with its outcome.
	sub := func(what string) *op {
		return s.newOp(func(err error) { finish(what, err) })
	}
	switch c.Action {
	case ActionStart:
		so := sub("started")
		s.startApp(sp, so)
		so.arm()
	case ActionDelete:
		so := sub("deleted")
		s.deleteApp(a, so)
		so.arm()
	case ActionUnchanged:
		// Left alone, but what should run and does not is started (as
		// `keel start` of a stopped app does).
		var idle []*instance
		for _, in := range a.insts {
			if in.cur == nil && !in.removed {
				idle = append(idle, in)
			}
		}
		what := "unchanged"
		if len(idle) > 0 {
			what = "started"
			a.stopped = false
		}
		so := sub(what)
		for _, in := range idle {
			s.startIdle(in, so)
		}
		s.save(a)
		so.arm()
	case ActionScale:
		so := sub("scaled")
		a.stopped = false
		for _, in := range a.insts {
			if in.cur == nil && !in.removed {
				s.startIdle(in, so)
			}
		}
		s.scaleApp(a, sp.Instances, so)
		so.arm()
	case ActionReplace:
		sp.Instances = c.To
		if mode == ApplyReload && a.sharesSockets() && sameSockets(a.spec, sp) {
			s.rollOut(a, sp, func(err error) { finish("reloaded", err) })
			return
		}
		what := "restarted"
		reason := "restart"
		if mode == ApplyReload {
			what, reason = "reloaded", "reload"
		}
		so := sub(what)
		s.replaceApp(a, sp, reason, so)
		so.arm()
	}
}

// sameSockets reports whether two definitions share the same sockets, so
// that old and new processes can overlap on them.
func sameSockets(old, new *spec.App) bool {
	if len(old.Listen) != len(new.Listen) {
		return false
	}
	for i := range old.Listen {
		if old.Listen[i] != new.Listen[i] {
			return false
		}
	}
	return new.IsNode() || len(new.Listen) > 0
}

// replaceApp makes sp the app's definition and restarts every instance
// with it, then scales to sp's count.
func (s *Supervisor) replaceApp(a *app, sp *spec.App, reason string, o *op) {
	a.spec = sp
	a.stopped = false
	for _, in := range a.insts {
		in.sp = nil
	}
	for _, in := range append([]*instance(nil), a.insts...) {
		s.restartInstance(in, reason, o)
	}
	s.scaleApp(a, sp.Instances, o)
}

// rollOut replaces the app's processes one at a time with processes of
// to, each ready before its old one stops; once all are, to becomes the
// app's definition and the app is scaled to its count. If a new process
// fails, the instances already replaced are rolled back the same way to
// the old definition, which stays the app's, and then hears the failure.
func (s *Supervisor) rollOut(a *app, to *spec.App, then func(error)) {
	o := s.newOp(nil)
	var failed error
	o.reply = func(err error) {
		a.deploying = nil
		if failed != nil {
			err = failed
		}
		then(err)
	}
	began := s.clock.Now()
	a.deploying = to
	insts := make([]*instance, 0, len(a.insts))
	for _, in := range a.insts {
		if !in.removed {
			insts = append(insts, in)
		}
	}
	done := o.add()
	var replaced []*instance
	var back func(i int)
	back = func(i int) {
		if i == len(replaced) {
			done(nil)
			return
		}
		s.reloadOne(replaced[i], a.spec, "reload", o, func(err error) {
			if err != nil {
				s.log.Error("rolling back", "app", a.spec.Name, "instance", replaced[i].num, "err", err)
			}
			back(i + 1)
		})
	}
	var step func(i int)
	step = func(i int) {
		if i == len(insts) {
			a.spec = to
			a.stopped = false
			for _, in := range a.insts {
				in.sp = nil
			}
			a.reloadHist.observe(s.clock.Now().Sub(began))
			s.scaleApp(a, to.Instances, o)
			done(nil)
			return
		}
		in := insts[i]
		s.reloadOne(in, to, "reload", o, func(err error) {
			if err != nil {
				failed = err
				back(0)
				return
			}
			replaced = append(replaced, in)
			step(i + 1)
		})
	}
	step(0)
	o.arm()
}
