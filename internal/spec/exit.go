package spec

import (
	"fmt"
	"strings"
	"time"
)

// Exit is how one process ended. Code is nil when a signal ended it; Signal
// is nil when it exited by itself. Reason says why keel stopped it, when keel
// did ("stop", "restart", "reload", "max_memory", "cron", "watch", "health",
// "ready_timeout", "scale", "delete"); it is empty for exits keel did not ask for.
type Exit struct {
	Code   *int      `json:"code"`
	Signal *string   `json:"signal"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
	// Cause says what ended a crashed process when keel knows more than
	// the code or signal (CauseOOMKilled). Unlike Reason, it leaves the
	// exit a crash.
	Cause string `json:"cause,omitempty"`
}

// CauseOOMKilled is the Cause of a process the kernel's OOM killer ended
// (its cgroup's memory.events counted an oom_kill).
const CauseOOMKilled = "killed by the kernel OOM killer"

// ExitCode returns an Exit for a process that exited with code c.
func ExitCode(c int, at time.Time) Exit { return Exit{Code: &c, At: at} }

// ExitSignal returns an Exit for a process that a signal ended.
func ExitSignal(name string, at time.Time) Exit { return Exit{Signal: &name, At: at} }

// Clean reports whether the process exited by itself with code 0.
func (e Exit) Clean() bool { return e.Code != nil && *e.Code == 0 }

// Crashed reports whether the exit was abnormal and not asked for by keel:
// a non-zero code or a signal, with no Reason.
func (e Exit) Crashed() bool { return e.Reason == "" && !e.Clean() }

func (e Exit) String() string {
	var b strings.Builder
	switch {
	case e.Signal != nil:
		b.WriteString("signal " + *e.Signal)
	case e.Code != nil:
		fmt.Fprintf(&b, "code %d", *e.Code)
	default:
		b.WriteString("unknown")
	}
	if e.Reason != "" {
		b.WriteString(" (" + e.Reason + ")")
	}
	if e.Cause != "" {
		b.WriteString(", " + e.Cause)
	}
	return b.String()
}
