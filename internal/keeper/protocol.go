package keeper

import (
	"os"
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
	// Host is the keeper process's id (Config.Host) when it holds several
	// instances: its files are hostPathsFor(Host). "": one instance.
	Host string `json:"host,omitempty"`

	Ready    bool   `json:"ready"`
	Status   string `json:"status"`
	Stopping bool   `json:"stopping"` // the app said it is stopping
	Crashing bool   `json:"crashing"` // … because of a fatal error (graceful crash)
	// CrashText is the fatal error as the app printed it (Crashing; a
	// Node app's preload tells it), for the crash report: once the
	// replacement runs, the log files no longer hold this process's words
	// alone.
	CrashText     string     `json:"crash_text,omitempty"`
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
	msgListen   = "listen"
)

// Reply codes.
const (
	codeExited     = "exited"
	codeRunning    = "running"
	codeBadCommand = "bad_command"
)

// message is one line from a keeper.
type message struct {
	Type    string         `json:"type"`
	State   *State         `json:"state,omitempty"`   // hello
	Text    string         `json:"text,omitempty"`    // status; stopping: the crash text
	Crash   bool           `json:"crash,omitempty"`   // stopping: a graceful crash
	Exit    *spec.Exit     `json:"exit,omitempty"`    // exit
	Seq     int            `json:"seq,omitempty"`     // reply
	Error   string         `json:"error,omitempty"`   // reply
	Code    string         `json:"code,omitempty"`    // reply
	Listen  *ListenRequest `json:"listen,omitempty"`  // listen
	Sockets []socketInfo   `json:"sockets,omitempty"` // reply to sockets
	// LogBytes, the reply to log_bytes: stdout's and stderr's byte counts.
	LogBytes []uint64 `json:"log_bytes,omitempty"`
	// FDs is how many descriptors travel with the line (SCM_RIGHTS).
	FDs int `json:"fds,omitempty"`

	files []*os.File // the descriptors: sent with the line, or received with it
}

// Commands, daemon to keeper.
const (
	cmdSignal   = "signal"
	cmdStop     = "stop"
	cmdRelease  = "release"
	cmdSocket   = "socket"    // the answer to a listen message
	cmdSockets  = "sockets"   // hand back every listening socket
	cmdLogBytes = "log_bytes" // how many bytes the app wrote to stdout and stderr
)

// command is one line from a daemon.
type command struct {
	Cmd       string `json:"cmd"`
	Seq       int    `json:"seq"`
	Signal    string `json:"signal,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
	// socket: the listen request answered, and the socket's name (with
	// one descriptor) or why there is none.
	ID    int    `json:"id,omitempty"`
	Name  string `json:"name,omitempty"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
	FDs   int    `json:"fds,omitempty"`

	files []*os.File
}

// Kinds of Socket.
const (
	// SocketListen is one of the app's `listen` sockets, named by its
	// LISTEN_FDNAMES name.
	SocketListen = "listen"
	// SocketCluster is a socket the daemon bound for a Node app in
	// cluster mode (ListenFor), named as the daemon named it.
	SocketCluster = "cluster"
)

// ListenRequest is a Node app's listen() on a port that the app's
// instances share in cluster mode: the keeper asks its daemon for the
// socket (SpawnerConfig.ListenFor).
type ListenRequest struct {
	// ID tells the keeper's requests apart; the answer names it.
	ID int `json:"id"`
	// Host is as the app wrote it; "" is every interface.
	Host string `json:"host"`
	// Port 0 asks for a free port, bound once and shared like any other.
	Port int `json:"port"`
	// Backlog is the app's own (0: none); the app applies it itself.
	Backlog   int  `json:"backlog"`
	IPv6Only  bool `json:"ipv6_only"`
	Exclusive bool `json:"exclusive"`
}

// Socket is a listening socket a keeper holds, handed back to a daemon
// that adopts the keeper (SpawnerConfig.AdoptSockets).
type Socket struct {
	Name string
	Kind string // SocketListen or SocketCluster
	// Slot is the instance number of the keeper that held it.
	Slot int
	File *os.File
}

// socketInfo is a Socket on the wire; its descriptor travels with the line.
type socketInfo struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// handshake is the line a keeper writes to its stdout once it started the
// app, or failed to.
type handshake struct {
	OK    bool   `json:"ok,omitempty"`
	State *State `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}
