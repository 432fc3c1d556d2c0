package keeper

import (
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// protocolVersion is State.Version. A daemon refuses to adopt a keeper of
// another version rather than misread it.
const protocolVersion = 1

// KeeperArg is the first argument that makes the keel binary run Main.
const KeeperArg = "__keeper"

// State is what a keeper knows about its app: the hello on every
// connection, the handshake, and (as of the spawn) the state file.
type State struct {
	Version  int    `json:"version"`
	ID       string `json:"id"`
	App      string `json:"app"`
	Instance int    `json:"instance"`
	Restarts int    `json:"restarts"`

	Pid      int       `json:"pid"`
	PidStart uint64    `json:"pid_start"` // proc.Identity.Start of the app
	Started  time.Time `json:"started"`

	KeeperPid   int    `json:"keeper_pid"`
	KeeperStart uint64 `json:"keeper_start"`

	Ready         bool       `json:"ready"`
	Status        string     `json:"status"`
	Stopping      bool       `json:"stopping"`       // the app said it is stopping
	StopRequested bool       `json:"stop_requested"` // a daemon sent stop
	Exit          *spec.Exit `json:"exit"`
}

// Message types, keeper to daemon.
const (
	msgHello    = "hello"
	msgReady    = "ready"
	msgStatus   = "status"
	msgStopping = "stopping"
	msgExit     = "exit"
	msgReply    = "reply"
)

// Reply codes.
const (
	codeExited     = "exited"
	codeRunning    = "running"
	codeBadCommand = "bad_command"
)

// message is one line from a keeper.
type message struct {
	Type  string     `json:"type"`
	State *State     `json:"state,omitempty"` // hello
	Text  string     `json:"text,omitempty"`  // status
	Exit  *spec.Exit `json:"exit,omitempty"`  // exit
	Seq   int        `json:"seq,omitempty"`   // reply
	Error string     `json:"error,omitempty"` // reply
	Code  string     `json:"code,omitempty"`  // reply
}

// Commands, daemon to keeper.
const (
	cmdSignal  = "signal"
	cmdStop    = "stop"
	cmdRelease = "release"
)

// command is one line from a daemon.
type command struct {
	Cmd       string `json:"cmd"`
	Seq       int    `json:"seq"`
	Signal    string `json:"signal,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
}

// handshake is the line a keeper writes to its stdout once it started the
// app, or failed to.
type handshake struct {
	OK    bool   `json:"ok,omitempty"`
	State *State `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}
