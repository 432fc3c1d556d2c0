// Package harness runs app instances for the bench commands the way keel's
// keeper does, without the daemon: a shared listening socket handed over
// as fd 3 (LISTEN_FDS) or through the Node preload, the Node IPC channel,
// a NOTIFY_SOCKET, and readiness from whichever the app uses. It exists to
// measure socket and drain designs in isolation; keel itself does not use
// it.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/keel-run/keel/internal/nodeipc"
)

// Readiness modes, as in SPEC.md.
const (
	ReadyListen  = "listen"  // the preload saw the server listen
	ReadyMessage = "message" // process.send('ready')
	ReadyNotify  = "notify"  // READY=1 on NOTIFY_SOCKET
	ReadyNone    = "none"    // spawned
)

// App is how to run one kind of app.
type App struct {
	Name string
	// Argv is the command; for Node apps, without the node binary.
	Argv []string
	// Node runs Argv with node (and the preload, if Preload).
	Node    bool
	Preload bool
	// ListenFDs passes the socket as fd 3 with LISTEN_FDS=1 and a correct
	// LISTEN_PID (set by an exec through sh, which keeps the pid).
	ListenFDs bool
	Ready     string
	Env       []string
}

// Env says where the shared pieces are.
type Env struct {
	NodeBin string
	Preload string // path from nodeipc.PreloadPath
	TempDir string // for notify sockets
}

// Instance is one running process of an App.
type Instance struct {
	ID     int
	cmd    *exec.Cmd
	conn   *nodeipc.Conn
	events chan nodeipc.Event
	served chan error
	cancel context.CancelFunc
	notify *net.UnixConn
	ready  chan struct{}
	exited chan struct{}
	err    error // cmd.Wait's result, after exited is closed
}

// Start starts instance id of app on sock.
func Start(e Env, app App, id int, sock *os.File) (*Instance, error) {
	argv := app.Argv
	if app.Node {
		pre := []string{e.NodeBin}
		if app.Preload {
			pre = append(pre, "--require", e.Preload)
		}
		argv = append(pre, argv...)
	}
	var extra []*os.File
	env := append(os.Environ(), app.Env...)
	env = append(env, "KEEL_INSTANCE="+strconv.Itoa(id), "NODE_APP_INSTANCE="+strconv.Itoa(id), "PORT=3000")
	if app.ListenFDs {
		extra = append(extra, sock)
		env = append(env, "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
		// sh's $$ is the pid that exec hands on to the app.
		argv = append([]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh"}, argv...)
	}
	in := &Instance{
		ID:     id,
		events: make(chan nodeipc.Event, 16),
		served: make(chan error, 1),
		ready:  make(chan struct{}),
		exited: make(chan struct{}),
	}
	var child *os.File
	if app.Node {
		var err error
		in.conn, child, err = nodeipc.NewChannel()
		if err != nil {
			return nil, err
		}
		extra = append(extra, child)
		env = append(env, nodeipc.ChildEnv(2+len(extra), "")...)
	}
	if app.Ready == ReadyNotify {
		path := filepath.Join(e.TempDir, fmt.Sprintf("notify-%d-%d.sock", id, time.Now().UnixNano()))
		nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: path})
		if err != nil {
			in.closeConn()
			if child != nil {
				child.Close()
			}
			return nil, err
		}
		in.notify = nc
		env = append(env, "NOTIFY_SOCKET="+path)
	}
	in.cmd = exec.Command(argv[0], argv[1:]...)
	in.cmd.Env = env
	in.cmd.ExtraFiles = extra
	in.cmd.Stdout, in.cmd.Stderr = os.Stderr, os.Stderr
	err := in.cmd.Start()
	if child != nil {
		child.Close()
	}
	if err != nil {
		in.closeConn()
		if in.notify != nil {
			in.notify.Close()
		}
		return nil, err
	}
	go func() {
		in.err = in.cmd.Wait()
		close(in.exited)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	if in.conn != nil {
		h := &nodeipc.Handler{
			Listen: func(context.Context, nodeipc.ListenRequest) (*os.File, error) { return sock, nil },
			Events: in.events,
		}
		go func() { in.served <- h.Serve(ctx, in.conn) }()
	} else {
		in.served <- nil
	}
	switch app.Ready {
	case ReadyNotify:
		go in.readNotify()
	case ReadyListen, ReadyMessage:
		go in.watchEvents(ctx, app.Ready)
	default:
		close(in.ready)
	}
	return in, nil
}

func (in *Instance) closeConn() {
	if in.conn != nil {
		in.conn.Close()
	}
}

func (in *Instance) readNotify() {
	buf := make([]byte, 4096)
	for {
		n, err := in.notify.Read(buf)
		if err != nil {
			return
		}
		for _, line := range bytes.Split(buf[:n], []byte("\n")) {
			if string(line) == "READY=1" {
				select {
				case <-in.ready:
				default:
					close(in.ready)
				}
			}
		}
	}
}

func (in *Instance) watchEvents(ctx context.Context, mode string) {
	for {
		select {
		case ev := <-in.events:
			if (mode == ReadyListen && ev.Kind == nodeipc.EventListening) || (mode == ReadyMessage && ev.Kind == nodeipc.EventReady) {
				select {
				case <-in.ready:
				default:
					close(in.ready)
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// WaitReady waits until the instance is ready, exits, or ctx is done.
func (in *Instance) WaitReady(ctx context.Context) error {
	select {
	case <-in.ready:
		return nil
	case <-in.exited:
		return fmt.Errorf("instance %d exited before it was ready: %v", in.ID, in.err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exited is closed when the process has exited.
func (in *Instance) Exited() <-chan struct{} { return in.exited }

// Pid is the process id.
func (in *Instance) Pid() int { return in.cmd.Process.Pid }

// Stop signals sig and waits for the exit; after timeout it sends SIGKILL.
// It returns the exit's error (nil for status 0) and releases everything.
func (in *Instance) Stop(sig syscall.Signal, timeout time.Duration) error {
	in.cmd.Process.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-in.exited:
	case <-t.C:
		in.cmd.Process.Kill()
		<-in.exited
		in.release()
		return errors.New("killed after the stop timeout")
	}
	in.release()
	return in.err
}

func (in *Instance) release() {
	in.cancel()
	<-in.served
	in.closeConn()
	if in.notify != nil {
		in.notify.Close()
		os.Remove(in.notify.LocalAddr().String())
	}
}
