package nodeipc_test

import (
	"context"
	"log"
	"os"
	"os/exec"

	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/sockets"
)

// How a keeper runs a Node app on keel's socket for port 3000. (Not run:
// it needs node and an app.)
func Example() {
	ctx := context.Background()
	addr, _ := sockets.Parse(":3000")
	l, err := sockets.Listen(addr, sockets.Options{}) // in keel: the daemon's, passed down
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	preload, err := nodeipc.PreloadPath(os.TempDir()) // in keel: $KEEL_HOME/run
	if err != nil {
		log.Fatal(err)
	}
	parent, child, err := nodeipc.NewChannel()
	if err != nil {
		log.Fatal(err)
	}
	defer parent.Close()
	cmd := exec.Command("node", "--require", preload, "server.js")
	cmd.ExtraFiles = []*os.File{child} // fd 3
	cmd.Env = append(os.Environ(), nodeipc.ChildEnv(3, "SIGTERM")...)
	err = cmd.Start()
	child.Close() // the child has its copy; ours would hide the end of the channel
	if err != nil {
		log.Fatal(err)
	}

	events := make(chan nodeipc.Event)
	h := &nodeipc.Handler{
		Listen: func(ctx context.Context, req nodeipc.ListenRequest) (*os.File, error) {
			if sockets.MatchPort([]sockets.Addr{l.Addr()}, req.Port) >= 0 && !req.Exclusive {
				return l.File(), nil // keel's socket for that port
			}
			return nil, nil // let the app bind it itself
		},
		Events: events,
	}
	go func() {
		for ev := range events {
			if ev.Kind == nodeipc.EventListening && ev.Listening.Keel {
				log.Print("ready") // ready: listen
			}
		}
	}()
	err = h.Serve(ctx, parent) // until the app exits
	close(events)
	log.Print(err, cmd.Wait())
}
