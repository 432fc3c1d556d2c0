package keeper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// host is the keeper process around its instances: each instance is a
// keeper (its own socket, state, logs and owner loop), and the host starts
// them, passes the termination signals on to them and ends when the last
// one has. With Config.Host set it also takes spawn requests for more
// instances of its app on its own socket, so an app costs one Go runtime
// however many instances it has.
type host struct {
	id    string // Config.Host; "" for a keeper of one instance
	home  string
	app   string
	opts  Options
	sh    *shared
	log   *slog.Logger
	paths hostPaths
	ln    *net.UnixListener // the spawn socket; nil: one instance only
}

// listen opens the spawn socket, before the daemon hears of the first
// instance: from then on it may ask for the next. Without it the daemon
// starts another keeper for the next instance.
func (h *host) listen() {
	if h.id == "" {
		return
	}
	ln, err := listenUnix(h.paths.sock)
	if err != nil {
		h.log.Warn("keeper: not taking more instances", "err", err)
		return
	}
	h.ln = ln
}

func newHost(first *Config, opts Options, sh *shared, log *slog.Logger) *host {
	h := &host{id: first.Host, home: first.Home, app: first.App.Name, opts: opts, sh: sh, log: log}
	if h.id != "" {
		h.paths = hostPathsFor(h.home, h.id)
	}
	return h
}

// start starts one instance.
func (h *host) start(cfg *Config, files []*os.File) (*keeper, error) {
	log := h.log.With("id", cfg.ID, "instance", cfg.Instance)
	if h.id == "" {
		log = log.With("app", cfg.App.Name)
	}
	return start(cfg, files, h.opts, h.sh, log)
}

// trimAfter is how long starts must pause before the keeper returns the
// heap a burst of them left behind.
const trimAfter = 2 * time.Second

// spawned is the outcome of one spawn request.
type spawned struct {
	k *keeper // nil: nothing was started
}

// run runs first and every instance spawned later until none is left,
// then stops taking requests and removes the host's files. A termination
// signal goes to every instance (each stops its app and ends once the
// exit is reported); no request is taken after it.
func (h *host) run(first *keeper, sigC <-chan os.Signal) {
	running := map[*keeper]chan os.Signal{}
	doneC := make(chan *keeper)
	launch := func(k *keeper, terminating bool) {
		sc := make(chan os.Signal, 4)
		if terminating {
			sc <- syscall.SIGTERM
		}
		running[k] = sc
		go func() {
			k.run(sc)
			doneC <- k
		}()
	}
	launch(first, false)

	var connC chan *net.UnixConn
	quit := make(chan struct{})
	acceptDone := make(chan struct{})
	if h.ln != nil {
		connC = make(chan *net.UnixConn)
		go func() {
			defer close(acceptDone)
			h.accept(h.ln, connC, quit)
		}()
	} else {
		close(acceptDone)
	}

	// A burst of starts leaves the heap larger than what the instances
	// keep; once starts pause, it goes back to the system.
	trim := time.NewTimer(time.Hour)
	trim.Stop()
	defer trim.Stop()
	spawnC := make(chan spawned)
	pending := 0
	terminating := false
	for len(running) > 0 || pending > 0 {
		select {
		case c := <-connC:
			if terminating {
				c.Close()
				continue
			}
			pending++
			go func() { spawnC <- spawned{h.serveSpawn(c)} }()
		case sp := <-spawnC:
			pending--
			if sp.k != nil {
				launch(sp.k, terminating)
			}
			trim.Reset(trimAfter)
		case <-trim.C:
			debug.FreeOSMemory()
		case k := <-doneC:
			delete(running, k)
		case sig := <-sigC:
			if sig != syscall.SIGTERM && sig != syscall.SIGINT {
				continue // SIGPIPE and SIGHUP: we only must not die of them
			}
			terminating = true
			for _, sc := range running {
				select {
				case sc <- sig:
				default:
				}
			}
		}
	}
	// Closing the listener resets the connections still in its backlog:
	// their daemon sees no handshake and starts another keeper.
	close(quit)
	if h.ln != nil {
		h.ln.Close()
	}
	<-acceptDone
	if h.id != "" {
		if err := h.paths.remove(); err != nil {
			h.log.Warn("keeper: removing files", "err", err)
		}
	}
}

// accept takes spawn connections until the listener is closed.
func (h *host) accept(ln *net.UnixListener, connC chan<- *net.UnixConn, quit <-chan struct{}) {
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			h.log.Warn("keeper: accepting", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-quit:
				t.Stop()
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case connC <- c:
		case <-quit:
			c.Close()
			return
		}
	}
}

// serveSpawn starts the instance one request asks for: a Config with its
// listening sockets, then EOF, as on a keeper's stdin; the answer is the
// handshake line. An instance whose handshake cannot be delivered is
// killed and releases itself: no daemon knows of it.
func (h *host) serveSpawn(c *net.UnixConn) *keeper {
	defer c.Close()
	if !sameUser(c) {
		h.log.Warn("keeper: refused a spawn request of another user")
		return nil
	}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	answer := func(hs handshake) error {
		b, err := json.Marshal(hs)
		if err != nil {
			return err
		}
		// The start itself may take longer than the request's deadline
		// (the daemon waits hostStartFactor times as long).
		c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		_, err = c.Write(append(b, '\n'))
		return err
	}
	cfg, files, err := h.readSpawn(c)
	if errors.Is(err, errNoConfig) {
		return nil // a daemon seeing whether the keeper lives
	}
	if err != nil {
		h.log.Warn("keeper: bad spawn request", "err", err)
		answer(handshake{Error: err.Error()})
		return nil
	}
	k, err := h.start(cfg, files)
	if err != nil {
		h.log.Error("keeper: start failed", "id", cfg.ID, "err", err)
		answer(handshake{Error: err.Error()})
		return nil
	}
	st := k.state
	if err := answer(handshake{OK: true, State: &st}); err != nil {
		k.log.Warn("keeper: handshake not delivered; killing the app", "err", err)
		k.orphaned = true
		_ = k.proc.Signal(syscall.SIGKILL)
		return k
	}
	k.log.Info("keeper: app started", "pid", st.Pid)
	return k
}

// readSpawn reads and checks one spawn request.
func (h *host) readSpawn(c *net.UnixConn) (*Config, []*os.File, error) {
	b, files, err := recvConn(c)
	cfg, err := decodeConfig(b, files, err)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case cfg.Host != h.id:
		err = fmt.Errorf("config: host %q sent to keeper %s", cfg.Host, h.id)
	case cfg.App.Name != h.app:
		err = fmt.Errorf("config: app %q sent to the keeper of %q", cfg.App.Name, h.app)
	case len(files) != len(cfg.ListenNames):
		err = fmt.Errorf("config: %d listen names for %d descriptors", len(cfg.ListenNames), len(files))
	}
	if err != nil {
		closeFiles(files)
		return nil, nil, err
	}
	return cfg, files, nil
}

// recvConn reads c until EOF, collecting the descriptors that come along
// (as recvConfig does for a keeper's stdin), within c's read deadline.
func recvConn(c *net.UnixConn) ([]byte, []*os.File, error) {
	var data []byte
	var files []*os.File
	buf := make([]byte, 16<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)) // SCM_MAX_FD descriptors
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			var perr error
			if files, perr = appendRights(files, oob[:oobn]); perr != nil {
				return nil, files, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return nil, files, errors.New("too many descriptors")
		}
		data = append(data, buf[:n]...)
		switch {
		case errors.Is(err, io.EOF) || err == nil && n == 0 && oobn == 0:
			return data, files, nil
		case err != nil:
			return nil, files, err
		}
	}
}
