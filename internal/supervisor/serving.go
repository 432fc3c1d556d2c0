package supervisor

import "slices"

// The supervisor is the one owner of "which instances get traffic": it
// alone knows, for every process, whether it is ready, whether keel asked
// it to stop, whether the app said it is stopping or crashing, and
// whether it exited. It publishes the serving slots of each app to
// Config.Serving whenever they change; whoever steers connections (the
// daemon's socket set) follows that alone.

// serves reports whether r takes connections.
func (r *run) serves() bool {
	return r.p != nil && r.ready && !r.exited && !r.stopAsked && !r.quitting && !r.crashed
}

// servingSlots lists, in ascending order, the slots of a that have a
// process taking connections: the current one, or a reload's new one
// (which takes connections on the slot's sockets as soon as it is ready).
func (a *app) servingSlots() []int {
	var out []int
	for _, in := range a.insts {
		if in.cur != nil && in.cur.serves() || in.next != nil && in.next.serves() {
			out = append(out, in.num)
		}
	}
	return out
}

// publishServing tells Config.Serving the serving slots of a, if they
// changed since it last did. Called wherever a process's serving can
// change: it is ready, keel asks it to stop, it says it is stopping or
// crashing, it exits.
func (s *Supervisor) publishServing(a *app) {
	if s.cfg.Serving == nil {
		return
	}
	slots := a.servingSlots()
	if slices.Equal(slots, a.served) {
		return
	}
	a.served = slots
	s.cfg.Serving(a.spec.Name, slices.Clone(slots))
}
