package keeper

import (
	"context"
	"log/slog"
	"os"

	"github.com/keel-run/keel/internal/spec"
)

// Options are what the keel binary wires into its keepers beyond the
// Config: hooks implemented in other packages.
type Options struct {
	// NodeIPC opens Node's IPC channel for apps whose Config.NodeIPC is
	// set. Nil: no channel, and the `message` and `listen` ready modes
	// count as ready at once.
	NodeIPC NodeIPC
}

// NodeIPC opens Node's IPC channel for one app process. The keeper calls
// it once, before spawning the app; an error fails the spawn.
type NodeIPC func(req NodeIPCRequest) (NodeChannel, error)

// NodeIPCRequest is what a NodeIPC hook gets to know.
type NodeIPCRequest struct {
	App      *spec.App
	Instance int
	// Argv is the command line the keeper is about to run.
	Argv []string
	// Listeners are the app's inherited listening sockets, named by
	// ListenNames. They stay open until the app has exited; the keeper
	// closes them.
	Listeners   []*os.File
	ListenNames []string
	// ListenFor asks the daemon for the socket that the app's instances
	// share for a listen in cluster mode (SpawnerConfig.ListenFor). It
	// waits for a daemon while none is connected, and for its answer,
	// until ctx is done or the keeper ends. The file stays the keeper's:
	// it is open until the keeper ends, and a daemon that adopts the
	// keeper gets it back.
	ListenFor func(ctx context.Context, req ListenRequest) (*os.File, error)
	// RunDir is keel's private run directory (for a preload script, say).
	RunDir string
	Log    *slog.Logger
}

// NodeChannel is keel's end of one app's IPC channel.
type NodeChannel interface {
	// Child is the app's end. The keeper passes it as the descriptor right
	// after the listen fds and closes its own copy once the app started.
	Child() *os.File
	// Prepare returns the command line to run instead of argv (it may add
	// node's --require) and the environment entries the app needs, given
	// the descriptor number the channel has in the app.
	Prepare(fd int, argv []string) (newArgv, env []string)
	// Serve runs keel's side of the channel from its own goroutine until
	// ctx is done or the app closes the channel, calling report for what
	// the app says. report does not block.
	Serve(ctx context.Context, report func(NodeEvent)) error
	// Close releases keel's end; called after Serve returned.
	Close() error
}

// NodeEvent is what a Node app reported over the channel.
type NodeEvent struct {
	Kind NodeEventKind
	// Text (NodeCrashing) is the fatal error as the app printed it.
	Text string
}

// NodeEventKind says what a Node app reported.
type NodeEventKind int

const (
	// NodeReady: process.send('ready') — ready for `ready: message`.
	NodeReady NodeEventKind = iota + 1
	// NodeListening: a server listens — ready for `ready: listen`.
	NodeListening
	// NodeStopping: the app began a graceful shutdown.
	NodeStopping
	// NodeCrashing: the app hit a fatal error and drains before it exits
	// 1 (graceful crash).
	NodeCrashing
)

// wantsNodeIPC is whether the keeper should open Node's IPC channel for
// app: every Node app (the preload also makes its stdout and stderr
// blocking, so no line is lost), and any app whose readiness comes
// through the channel.
func wantsNodeIPC(app *spec.App) bool {
	return app.IsNode() || app.Ready == spec.ReadyMessage || app.Ready == spec.ReadyListen
}
