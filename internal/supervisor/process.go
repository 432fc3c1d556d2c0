package supervisor

import (
	"context"
	"syscall"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// EventKind says what a process reported.
type EventKind int

const (
	// EventReady: the instance is ready to serve (per its app's Ready mode).
	EventReady EventKind = iota + 1
	// EventStatus: a free-text status line (sd_notify STATUS=).
	EventStatus
	// EventStopping: the app said it is shutting down (sd_notify
	// STOPPING=1), or an earlier daemon asked the adopted process to stop.
	// It takes no new connections from then on.
	EventStopping
	// EventExit: the process ended; Exit is set. It is the last event.
	EventExit
	// EventCrashing: the app hit a fatal error and is going down: it
	// stopped taking connections, lets the requests in flight finish and
	// exits with a failure within kill_timeout (a Node app's graceful
	// crash). It is replaced at once, without waiting for that exit.
	EventCrashing
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventStatus:
		return "status"
	case EventStopping:
		return "stopping"
	case EventExit:
		return "exit"
	case EventCrashing:
		return "crashing"
	}
	return "unknown"
}

// Event is one report from a running process.
type Event struct {
	Kind EventKind
	Text string    // EventStatus; EventCrashing: the fatal error as the app printed it, if known
	Exit spec.Exit // EventExit
}

// Process is one running OS process of an instance, as the supervisor sees
// it. Implementations: the keeper client (a per-process keeper that outlives
// the daemon) and fakes in tests.
type Process interface {
	// ID is unique for every process run; it survives a daemon restart.
	ID() string
	// Pid of the app's process (the leader of its process group).
	Pid() int
	// Started is when the process was spawned.
	Started() time.Time
	// Events delivers Ready/Status/Stopping/Crashing reports, then exactly one
	// EventExit, then is closed. The channel must be drained.
	Events() <-chan Event
	// Signal sends sig to the process group. It does not wait.
	Signal(sig syscall.Signal) error
	// Stop sends sig to the process group and, if the process has not
	// exited after timeout, SIGKILLs the group. It returns at once; the
	// EventExit follows. The escalation continues even if the daemon dies.
	Stop(sig syscall.Signal, timeout time.Duration) error
	// Release tells the process side that its exit has been recorded, so
	// it may free what it holds. Call it after EventExit.
	Release()
}

// Notifier is a Process that can hand its events to a function instead of
// its Events channel. The supervisor then needs no goroutine per process
// to forward them. Notify is called once, before any event is read; f
// gets every event from then on (those already pending first), in order,
// and must not block or call back into the Process.
type Notifier interface {
	Notify(f func(Event))
}

// SpawnRequest is what the supervisor asks a Spawner to run.
type SpawnRequest struct {
	App      *spec.App
	Instance int
	// Restarts is the instance's restart count including this start.
	Restarts int
}

// Spawner starts processes and finds those left by a previous daemon.
type Spawner interface {
	// Spawn starts one process. The returned process has already started
	// (Pid is set) unless err != nil.
	Spawn(ctx context.Context, req SpawnRequest) (Process, error)
	// Survivors returns every process still running from an earlier daemon
	// of the same KEEL_HOME.
	Survivors(ctx context.Context) ([]Survivor, error)
}

// Survivor is a process found alive after a daemon restart.
type Survivor struct {
	App      string
	Instance int
	Process  Process
}

// Clock is the supervisor's view of time, so tests never sleep.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, unless stopped.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a stoppable AfterFunc timer.
type Timer interface {
	Stop() bool
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
