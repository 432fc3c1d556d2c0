package daemon

import (
	"os"

	"github.com/keel-run/keel/internal/keeper"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

// The listening sockets keel owns live in a sockets.Set (one goroutine
// owns them). The daemon only wires it: the keepers get their instances'
// sockets from it and hand back a surviving instance's, and the
// supervisor, which alone knows which instances serve, tells it where new
// connections go (supervisor.Config.Serving).

// listeners is keeper.SpawnerConfig.Listeners.
func (d *Daemon) listeners(a *spec.App, slot int) ([]*os.File, []string, error) {
	return d.socks.Files(a.Name, a.Listen, slot)
}

// listenFor is keeper.SpawnerConfig.ListenFor.
func (d *Daemon) listenFor(app string, slot int, req keeper.ListenRequest) (*os.File, string, error) {
	return d.socks.ListenFor(app, slot, sockets.TCPAddr(req.Host, req.Port), req.IPv6Only)
}

// adoptSockets is keeper.SpawnerConfig.AdoptSockets.
func (d *Daemon) adoptSockets(app string, socks []keeper.Socket) {
	out := make([]sockets.Adopted, 0, len(socks))
	for _, sk := range socks {
		switch sk.Kind {
		case keeper.SocketListen, keeper.SocketCluster:
			out = append(out, sockets.Adopted{Name: sk.Name, Cluster: sk.Kind == keeper.SocketCluster, Slot: sk.Slot, File: sk.File})
		default:
			d.log.Warn("a keeper handed back a socket of an unknown kind", "app", app, "name", sk.Name, "kind", sk.Kind)
			sk.File.Close()
		}
	}
	d.socks.Adopt(app, out)
}

// pruneSockets closes the sockets no app in apps needs.
func (d *Daemon) pruneSockets(apps []*spec.App) {
	defined := make(map[string][]string, len(apps))
	for _, a := range apps {
		defined[a.Name] = a.Listen
	}
	d.socks.Prune(defined)
}
