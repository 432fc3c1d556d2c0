package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/cgroup"
	"github.com/keel-run/keel/internal/control"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/oneline"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/store"
	"github.com/keel-run/keel/internal/supervisor"
)

var _ control.Backend = (*Daemon)(nil)

// Start opens the apps' sockets, then defines and starts them. A socket
// that cannot be opened refuses the whole request before anything starts.
func (d *Daemon) Start(ctx context.Context, apps []*spec.App) (api.Result, error) {
	for _, a := range apps {
		if err := d.socks.Ensure(a.Name, a.Listen); err != nil {
			return api.Result{}, fmt.Errorf("starting %s: %w", a.Name, err)
		}
	}
	l, err := d.sup.Start(ctx, apps)
	d.trig.sync(ctx)
	return d.result(l), err
}

// Apply opens the sockets of the apps it is given, then makes the running
// apps match them (supervisor.Apply). A rollout that failed is reported in
// its app's AppChange with the failing instance's last log lines.
func (d *Daemon) Apply(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	if !req.DryRun {
		for _, a := range req.Apps {
			if err := d.socks.Ensure(a.Name, a.Listen); err != nil {
				return api.ApplyResult{}, fmt.Errorf("applying %s: %w", a.Name, err)
			}
		}
	}
	mode := supervisor.ApplyRestart
	if req.Mode == api.ApplyReload {
		mode = supervisor.ApplyReload
	}
	changes, err := d.sup.Apply(ctx, req.Apps, supervisor.ApplyOptions{Mode: mode, Prune: req.Prune, DryRun: req.DryRun})
	if changes == nil && err != nil {
		return api.ApplyResult{}, err
	}
	var res api.ApplyResult
	names := map[string]bool{}
	for _, c := range changes {
		names[c.App] = true
		ac := api.AppChange{App: c.App, Action: c.Action, Done: c.Done, Changes: c.Changes, From: c.From, To: c.To}
		if c.Err != nil {
			ac.Error = oneline.Fold(c.Err.Error(), 0)
			var ie *supervisor.InstanceError
			if errors.As(c.Err, &ie) {
				n := ie.Instance
				ac.FailedInstance = &n
				ac.Logs = d.lastLines(ie.App, ie.Instance, ie.Since, applyLogLines)
			}
		}
		res.Apps = append(res.Apps, ac)
	}
	if err != nil {
		res.Error = oneline.Fold(err.Error(), 0)
	}
	if req.DryRun {
		return res, nil
	}
	d.trig.sync(ctx)
	d.pruneSockets(d.liveSpecs(ctx))
	if l, lerr := d.sup.List(ctx); lerr == nil {
		var mine []supervisor.InstanceInfo
		for _, in := range l {
			if names[in.App] {
				mine = append(mine, in)
			}
		}
		res.Instances = d.instances(mine)
	}
	return res, nil
}

// applyLogLines is how many of a failing instance's last lines an apply shows.
const applyLogLines = 10

// lastLines returns up to n of the last lines an instance wrote since
// since, stderr's after stdout's, without their timestamps.
func (d *Daemon) lastLines(app string, inst int, since time.Time, n int) []string {
	var out []string
	for _, stream := range []string{logs.Stdout, logs.Stderr} {
		raw, err := logs.TailRawSince(logs.Path(d.o.Home, app, inst, stream), 8<<10, since)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// Stop stops the target gracefully.
func (d *Daemon) Stop(ctx context.Context, t spec.Target) (api.Result, error) {
	l, err := d.sup.Stop(ctx, t)
	return d.result(l), err
}

// Restart stops then starts the target.
func (d *Daemon) Restart(ctx context.Context, t spec.Target) (api.Result, error) {
	l, err := d.sup.Restart(ctx, t, "restart")
	return d.result(l), err
}

// Reload replaces the target's processes without downtime.
func (d *Daemon) Reload(ctx context.Context, t spec.Target) (api.Result, error) {
	l, err := d.sup.Reload(ctx, t, "reload")
	return d.result(l), err
}

// Scale changes an app's instance count.
func (d *Daemon) Scale(ctx context.Context, app string, n int) (api.Result, error) {
	l, err := d.sup.Scale(ctx, app, n)
	return d.result(l), err
}

// Delete stops and forgets the target's apps.
func (d *Daemon) Delete(ctx context.Context, t spec.Target) (api.Result, error) {
	l, err := d.sup.Delete(ctx, t)
	if err == nil {
		d.trig.sync(ctx)
		d.pruneSockets(d.liveSpecs(ctx))
	}
	return d.result(l), err
}

// List returns every instance with its latest memory and CPU sample.
func (d *Daemon) List(ctx context.Context) ([]api.Instance, error) {
	l, err := d.sup.List(ctx)
	if err != nil {
		return nil, err
	}
	return d.instances(l), nil
}

// Describe returns everything known about the target's apps.
func (d *Daemon) Describe(ctx context.Context, t spec.Target) ([]api.AppDetail, error) {
	apps, err := d.sup.Apps(ctx, t)
	if err != nil {
		return nil, err
	}
	out := make([]api.AppDetail, 0, len(apps))
	for _, a := range apps {
		// The start's whole shell environment is not the app's definition
		// and would bury it; the app's own env stays.
		sp := a.Spec.Clone()
		sp.ShellEnv = nil
		det := api.AppDetail{
			Spec:        sp,
			Desired:     "running",
			Instances:   d.instances(a.Instances),
			Triggers:    d.trig.info(a.Spec.Name),
			Sockets:     d.socks.Names(a.Spec.Name, a.Spec.Listen),
			Containment: d.containment,
		}
		if a.Stopped {
			det.Desired = "stopped"
		}
		if a.Deploying != nil {
			det.Deploying = a.Deploying.Clone()
			det.Deploying.ShellEnv = nil
		}
		for _, e := range a.Exits {
			det.Exits = append(det.Exits, api.ExitRecord{Instance: e.Instance, Pid: e.Pid, Exit: e.Exit})
		}
		if g, ok := d.crash.latest(a.Spec.Name); ok {
			det.LatestCrash = &g
		}
		if t.Instance >= 0 {
			det.Instances = filterInstance(det.Instances, t.Instance)
		}
		out = append(out, det)
	}
	return out, nil
}

// instanceCgroups says where the instances' cgroups go: dir when given
// (and a writable cgroup v2 directory), else this daemon's delegated
// subtree when it has one; "" and why not otherwise.
func instanceCgroups(dir string) (string, string) {
	if dir != "" {
		if err := cgroup.Usable(dir); err != nil {
			return "", err.Error()
		}
		return dir, ""
	}
	if ok, why := cgroup.Probe(); !ok {
		return "", why
	}
	root, err := cgroup.Delegate()
	if err != nil {
		return "", err.Error()
	}
	return root, ""
}

// containment says how an app's descendants end with it, so an operator
// knows whether Delegate=yes is in place.
func containment(cg, why string) string {
	const mode = "process tree: the keeper (a child subreaper) kills every descendant with the app"
	if cg == "" {
		return mode + "; no cgroup per instance: " + why
	}
	return "cgroup v2 per instance under " + cg + " (cgroup.kill ends the tree), and " + mode
}

func filterInstance(in []api.Instance, n int) []api.Instance {
	var out []api.Instance
	for _, i := range in {
		if i.Instance == n {
			out = append(out, i)
		}
	}
	return out
}

// Crashes lists crash groups, newest first.
func (d *Daemon) Crashes(ctx context.Context, app string) ([]api.CrashGroup, error) {
	return d.crash.groups(app), nil
}

// Crash returns one crash group with the exits it covers.
func (d *Daemon) Crash(ctx context.Context, id string) (api.CrashDetail, error) {
	g, ok := d.crash.get(id)
	if !ok {
		return api.CrashDetail{}, &spec.NotFoundError{What: fmt.Sprintf("crash %q", id)}
	}
	return g, nil
}

// Save writes the apps that should be running to KEEL_HOME/dump.json.
func (d *Daemon) Save(ctx context.Context) (api.Result, error) {
	apps, err := d.sup.Apps(ctx, spec.All)
	if err != nil && !isNotFound(err) {
		return api.Result{}, err
	}
	var dump store.Dump
	for _, a := range apps {
		if !a.Stopped {
			dump.Apps = append(dump.Apps, a.Spec)
		}
	}
	path := filepath.Join(d.o.Home, DumpName)
	if err := store.WriteDump(path, dump); err != nil {
		return api.Result{}, err
	}
	return api.Result{Message: fmt.Sprintf("saved %d apps to %s", len(dump.Apps), path)}, nil
}

// Resurrect starts the saved apps that are not defined now.
func (d *Daemon) Resurrect(ctx context.Context) (api.Result, error) {
	dump, err := store.ReadDump(filepath.Join(d.o.Home, DumpName))
	if err != nil {
		return api.Result{}, err
	}
	existing := map[string]bool{}
	if apps, err := d.sup.Apps(ctx, spec.All); err == nil {
		for _, a := range apps {
			existing[a.Spec.Name] = true
		}
	}
	var todo []*spec.App
	for _, a := range dump.Apps {
		if !existing[a.Name] {
			todo = append(todo, a)
		}
	}
	if len(todo) == 0 {
		return api.Result{Message: "every saved app is already defined"}, nil
	}
	return d.Start(ctx, todo)
}

// Kill stops every app, answers, then makes the daemon exit.
func (d *Daemon) Kill(ctx context.Context) (api.Result, error) {
	err := d.sup.StopAll(ctx)
	// Exit a moment after the answer is on its way; the control server
	// flushes it before returning from the handler.
	d.killOnce.Do(func() {
		time.AfterFunc(50*time.Millisecond, func() { close(d.killC) })
	})
	if err != nil {
		return api.Result{}, err
	}
	return api.Result{Message: "stopped every app; the daemon exits"}, nil
}

// Version identifies the daemon.
func (d *Daemon) Version() api.Version {
	return api.Version{Version: d.o.Version, Pid: os.Getpid(), Home: d.o.Home}
}

func (d *Daemon) liveSpecs(ctx context.Context) []*spec.App {
	apps, _ := d.sup.Apps(ctx, spec.All)
	out := make([]*spec.App, 0, len(apps))
	for _, a := range apps {
		out = append(out, a.Spec)
	}
	return out
}

func (d *Daemon) result(l []supervisor.InstanceInfo) api.Result {
	return api.Result{Instances: d.instances(l)}
}

func (d *Daemon) instances(l []supervisor.InstanceInfo) []api.Instance {
	now := time.Now()
	stats := d.stats.get()
	out := make([]api.Instance, 0, len(l))
	for _, in := range l {
		a := api.Instance{
			App: in.App, Instance: in.Instance, Pid: in.Pid, Status: in.Status.String(),
			Restarts: in.Restarts, LastExit: in.LastExit, Reason: in.Reason, StatusText: in.StatusText,
		}
		if in.Pid != 0 && !in.Started.IsZero() {
			a.UptimeMs = now.Sub(in.Started).Milliseconds()
			if st, ok := stats[in.Pid]; ok {
				a.MemoryBytes = st.RSS
				a.CPUPercent = st.CPU
			}
		}
		out = append(out, a)
	}
	return out
}
