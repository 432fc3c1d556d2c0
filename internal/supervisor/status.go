package supervisor

// Status is the state of one instance, exactly SPEC.md's six.
type Status int

const (
	Starting Status = iota + 1 // spawned, not yet ready
	Online                     // ready
	Stopping                   // asked to stop, not yet exited
	Stopped                    // not running, and keel will not start it by itself
	Waiting                    // backing off before a restart
	Errored                    // gave up: crash loop or start failure
)

func (s Status) String() string {
	switch s {
	case Starting:
		return "starting"
	case Online:
		return "online"
	case Stopping:
		return "stopping"
	case Stopped:
		return "stopped"
	case Waiting:
		return "waiting"
	case Errored:
		return "errored"
	}
	return "unknown"
}

// allowed lists, for each status, the statuses it may change to. Anything
// else is a bug in the state machine; setStatus logs it.
var allowed = [...][]Status{
	Starting: {Online, Stopping, Stopped, Waiting, Errored, Starting},
	Online:   {Stopping, Stopped, Waiting, Errored, Starting},
	Stopping: {Stopped, Starting, Waiting, Errored},
	Stopped:  {Starting, Stopped},
	Waiting:  {Starting, Stopped, Errored},
	Errored:  {Starting, Stopped},
}

// CanChange reports whether an instance may go from one status to another.
func CanChange(from, to Status) bool {
	if from == 0 { // a new or restored instance
		return to == Starting || to == Stopped || to == Errored
	}
	if int(from) >= len(allowed) {
		return false
	}
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}
