package supervisor

import (
	"context"
	"sort"
	"syscall"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// restore rebuilds the apps from the Store and reconciles them with the
// processes a previous daemon left running: each instance adopts the
// newest survivor of its slot, duplicates and strays are stopped, and
// instances that should run but have no process are started.
func (s *Supervisor) restore(ctx context.Context) error {
	var recs []AppRecord
	if s.cfg.Store != nil {
		var err error
		if recs, err = s.cfg.Store.LoadApps(); err != nil {
			return err
		}
	}
	survivors, err := s.cfg.Spawner.Survivors(ctx)
	if err != nil {
		// Not fatal: without survivors we start afresh, and the keepers
		// we could not reach keep their own processes.
		s.log.Error("finding running processes", "err", err)
	}
	slots := map[string]map[int][]Process{}
	for _, sv := range survivors {
		if slots[sv.App] == nil {
			slots[sv.App] = map[int][]Process{}
		}
		slots[sv.App][sv.Instance] = append(slots[sv.App][sv.Instance], sv.Process)
	}
	for _, rec := range recs {
		sp := rec.Spec
		if sp == nil || sp.Validate() != nil {
			s.log.Error("skipping a stored app that is not valid", "app", sp)
			continue
		}
		a := newApp(sp)
		a.stopped = rec.Stopped
		a.exits = rec.Exits
		s.apps[sp.Name] = a
		byNum := map[int]InstanceRecord{}
		for _, ir := range rec.Instances {
			byNum[ir.Instance] = ir
		}
		for i := 0; i < sp.Instances; i++ {
			in := a.addInstance()
			in.started = true
			ir, known := byNum[i]
			if known {
				in.restarts = ir.Restarts
				in.lastExit = ir.LastExit
				in.wantStopped = ir.Stopped
			}
			procs := slots[sp.Name][i]
			delete(slots[sp.Name], i)
			if len(procs) > 0 {
				sort.Slice(procs, func(x, y int) bool { return procs[x].Started().After(procs[y].Started()) })
				s.adopt(in, procs[0])
				for _, p := range procs[1:] {
					s.dispose(p, sp)
				}
				continue
			}
			switch {
			case known && ir.Errored != "":
				s.setStatus(in, Errored, ir.Errored)
			case a.stopped || in.wantStopped:
				s.setStatus(in, Stopped, "")
			default:
				s.spawnCur(in)
			}
		}
		s.save(a)
	}
	for name, byNum := range slots {
		for _, procs := range byNum {
			for _, p := range procs {
				var sp *spec.App
				if a, ok := s.apps[name]; ok {
					sp = a.spec
				}
				s.dispose(p, sp)
			}
		}
	}
	return nil
}

// adopt makes a survivor the instance's current process.
func (s *Supervisor) adopt(in *instance, p Process) {
	r := &run{inst: in, sp: in.spec()}
	r.paths = spec.ResolvePaths(r.sp)
	in.cur = r
	s.setStatus(in, Starting, "")
	s.attach(r, p)
}

// dispose stops a process no instance wants (a duplicate or a stray) and
// releases it once it exited.
func (s *Supervisor) dispose(p Process, sp *spec.App) {
	sig, timeout := syscall.SIGTERM, time.Duration(spec.DefaultKillTimeout)
	if sp != nil {
		sig, timeout = sp.Signal(), sp.KillTimeout.D()
	}
	s.log.Warn("stopping a process no instance owns", "pid", p.Pid(), "id", p.ID())
	if err := p.Stop(sig, timeout); err != nil {
		s.log.Warn("stopping stray process", "pid", p.Pid(), "err", err)
	}
	go func() {
		for ev := range p.Events() {
			if ev.Kind == EventExit {
				p.Release()
			}
		}
	}()
}
