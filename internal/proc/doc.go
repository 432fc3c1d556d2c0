// Package proc runs one OS process the way keel needs it: in a process
// group of its own, with exactly the environment, working directory, stdio
// files and extra file descriptors it is given, signalled as a group, and
// waited for by exactly one goroutine.
//
// # Socket activation and the pre-exec step
//
// When a process is given listening sockets (Options.ListenNames), it gets
// them as fds 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, as
// systemd does. LISTEN_PID must be the app's own pid, which the parent
// cannot know before the fork. So Start runs
//
//	<Options.Helper> __exec <status-fd> <path> <argv…>
//
// with the environment minus LISTEN_PID; ExecMain, running in the new
// process, adds LISTEN_PID=<its own pid>, marks the status fd close-on-exec
// and execs the real program. The pid survives exec. If the exec fails,
// ExecMain writes the error to the status fd and exits 127, and Start
// returns that error; if it succeeds the status fd closes with the exec and
// Start sees EOF. So a program that cannot be executed is an error from
// Start either way, never a process that dies at once.
//
// # Waiting and the group
//
// One goroutine per process waits for the leader. It first learns of the
// exit without reaping (waitid with WNOWAIT), so the leader's pid — which
// is the group id — stays reserved while it signals what is left of the
// group (when Options.KillGroupOnExit is set) and marks the process done;
// only then does it reap. With Options.KillDescendantsOnExit it then
// SIGKILLs every other descendant of the caller (KillDescendants), round
// after round until a round finds none alive it did not kill yet. Signal therefore never reaches a recycled pid:
// after the leader was reaped it returns os.ErrProcessDone.
//
// The package is a leaf: it imports only the standard library and
// golang.org/x/sys.
package proc
