// Command goapp is the Go app of the bench scenarios (scenario c): it takes
// its listening sockets from keel through systemd socket activation
// (github.com/coreos/go-systemd/v22/activation: LISTEN_FDS, LISTEN_PID),
// reports READY=1 on NOTIFY_SOCKET (ready: notify), names its instance in
// X-Keel-Instance, and on SIGTERM drains without failing a request:
//
//  1. stop accepting (close its descriptors; keel's socket stays open, so
//     new connections wait for the other instances);
//  2. answer every request from now on with "Connection: close";
//  3. close a connection that stays idle for a second (a request already
//     on its way gets answered instead of reset);
//  4. exit 0 once every connection has closed, or after 10 seconds.
//
// http.Server.Shutdown alone closes idle keep-alive connections at once,
// which fails requests a busy client has already sent on them.
//
// Without LISTEN_FDS it listens on $PORT (default 3000).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

const idleGrace = time.Second

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "goapp:", err)
		os.Exit(1)
	}
}

// drainer tracks connections and closes idle ones once draining.
type drainer struct {
	mu       sync.Mutex // guards the fields below
	draining bool
	idle     map[net.Conn]bool // every open connection: true while idle
	allGone  chan struct{}     // closed when draining and no connection is left
}

func (d *drainer) connState(c net.Conn, s http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s {
	case http.StateActive:
		d.idle[c] = false
	case http.StateNew, http.StateIdle: // no request in progress
		d.idle[c] = true
		if d.draining {
			d.closeIfIdleLocked(c)
		}
	case http.StateHijacked, http.StateClosed:
		delete(d.idle, c)
		d.checkGoneLocked()
	}
}

// closeIfIdleLocked closes c after idleGrace if it is idle then. d.mu held.
func (d *drainer) closeIfIdleLocked(c net.Conn) {
	time.AfterFunc(idleGrace, func() {
		d.mu.Lock()
		idle := d.idle[c]
		d.mu.Unlock()
		if idle {
			c.Close()
		}
	})
}

func (d *drainer) checkGoneLocked() {
	if d.draining && len(d.idle) == 0 {
		select {
		case <-d.allGone:
		default:
			close(d.allGone)
		}
	}
}

func (d *drainer) drain() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	for c, idle := range d.idle {
		if idle {
			d.closeIfIdleLocked(c)
		}
	}
	d.checkGoneLocked()
}

func (d *drainer) isDraining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

func run() error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	id := os.Getenv("KEEL_INSTANCE")
	if id == "" {
		id = fmt.Sprint(os.Getpid())
	}
	listeners, err := activation.Listeners()
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	var ls []net.Listener
	for _, l := range listeners {
		if l != nil {
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		port := os.Getenv("PORT")
		if port == "" {
			port = "3000"
		}
		l, err := net.Listen("tcp", ":"+port)
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}

	d := &drainer{idle: map[net.Conn]bool{}, allGone: make(chan struct{})}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Keel-Instance", id)
			if d.isDraining() {
				w.Header().Set("Connection", "close")
			}
			fmt.Fprintln(w, "hello")
		}),
		ConnState:         d.connState,
		ReadHeaderTimeout: 10 * time.Second,
	}
	serveErr := make(chan error, len(ls))
	for _, l := range ls {
		go func() { serveErr <- srv.Serve(l) }()
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify", "err", err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		return err
	case <-sig:
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	for _, l := range ls {
		l.Close()
	}
	d.drain()
	grace := 10 * time.Second
	select {
	case <-d.allGone:
	case <-time.After(grace):
		log.Warn("connections still open after the grace period")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
