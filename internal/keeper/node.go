package keeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

// OpenNodeChannel is keel's NodeIPC hook: Node's IPC channel of package
// nodeipc, with keel's preload for a Node app (`node --require <preload>`,
// the script written once into the run directory).
//
// The app's listen(port) is answered (nodeipc.Handler) as SPEC.md says:
//
//   - a port named in the app's `listen`: the inherited socket of that
//     address (sockets.MatchPort);
//   - otherwise, for an app with no `listen` — in cluster mode or not: one
//     instance today may be scaled to several, and a rolling reload needs
//     the old and new process on one socket — the socket the daemon binds
//     once for the app and that address and shares with every instance
//     (NodeIPCRequest.ListenFor), unless the app asked for an exclusive
//     listen;
//   - otherwise (a port the app's `listen` does not name, or an exclusive
//     listen) the app binds the port itself, as without keel.
//
// The app's process.send('ready') is NodeReady, a server of the app
// listening (on keel's socket or its own) is NodeListening, the preload
// closing the servers on the stop signal is NodeStopping, and on a fatal
// error (graceful_crash) NodeCrashing.
func OpenNodeChannel(req NodeIPCRequest) (NodeChannel, error) {
	if req.App == nil {
		return nil, errors.New("node ipc: no app")
	}
	c := &nodeChannel{
		app:       req.App,
		listeners: req.Listeners,
		names:     req.ListenNames,
		listenFor: req.ListenFor,
		log:       req.Log,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	for _, l := range req.App.Listen {
		if a, err := sockets.Parse(l); err == nil {
			c.addrs = append(c.addrs, a)
		}
	}
	if req.App.IsNode() {
		path, err := nodeipc.PreloadPath(req.RunDir)
		if err != nil {
			return nil, err
		}
		c.preload = path
	}
	conn, child, err := nodeipc.NewChannel()
	if err != nil {
		return nil, err
	}
	c.conn, c.child = conn, child
	return c, nil
}

var _ NodeIPC = OpenNodeChannel

type nodeChannel struct {
	app       *spec.App
	addrs     []sockets.Addr // the app's `listen`, parsed
	listeners []*os.File
	names     []string
	listenFor func(context.Context, ListenRequest) (*os.File, error)
	preload   string // "" unless the app runs under node
	log       *slog.Logger

	conn  *nodeipc.Conn
	child *os.File
}

func (c *nodeChannel) Child() *os.File { return c.child }

// Prepare puts `--require <preload>` right after node (before the app's
// own node flags), and adds the channel's environment: with graceful_crash
// on, a fatal error drains for at most kill_timeout.
func (c *nodeChannel) Prepare(fd int, argv []string) ([]string, []string) {
	env := nodeipc.ChildEnv(fd, c.app.KillSignal)
	if c.preload != "" && len(argv) > 0 {
		argv = append([]string{argv[0], "--require", c.preload}, argv[1:]...)
		if c.app.CrashesGracefully() {
			env = append(env, nodeipc.GracefulCrashEnv(c.app.KillTimeout.D()))
		}
	}
	return argv, env
}

func (c *nodeChannel) Serve(ctx context.Context, report func(NodeEvent)) error {
	events := make(chan nodeipc.Event)
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		for ev := range events {
			switch ev.Kind {
			case nodeipc.EventReady:
				report(NodeEvent{Kind: NodeReady})
			case nodeipc.EventListening:
				report(NodeEvent{Kind: NodeListening})
			case nodeipc.EventStopping:
				if ev.Crash {
					report(NodeEvent{Kind: NodeCrashing, Text: ev.Text})
				} else {
					report(NodeEvent{Kind: NodeStopping})
				}
			}
		}
	}()
	h := nodeipc.Handler{Listen: c.listen, Events: events, Log: c.log}
	err := h.Serve(ctx, c.conn)
	// Serve's goroutines have all ended: nothing sends on events any more.
	close(events)
	<-relayed
	return err
}

// sharedPorts reports whether the ports the app listens on are keel's to
// bind and share: when the app's `listen` does not name them explicitly.
func (c *nodeChannel) sharedPorts() bool {
	return len(c.app.Listen) == 0
}

// listen answers the app's listen(port); see OpenNodeChannel.
func (c *nodeChannel) listen(ctx context.Context, r nodeipc.ListenRequest) (*os.File, error) {
	if i := sockets.MatchPort(c.addrs, r.Port); i >= 0 {
		name := c.addrs[i].Name()
		if j := slices.Index(c.names, name); j >= 0 && j < len(c.listeners) {
			return c.listeners[j], nil
		}
		return nil, fmt.Errorf("keel's socket %s for port %d did not reach this process", name, r.Port)
	}
	if !c.sharedPorts() || r.Exclusive || c.listenFor == nil {
		return nil, nil
	}
	return c.listenFor(ctx, ListenRequest{Host: r.Host, Port: r.Port, Backlog: r.Backlog, IPv6Only: r.IPv6Only, Exclusive: r.Exclusive})
}

func (c *nodeChannel) Close() error { return c.conn.Close() }
