// Package health answers a kubelet's probes for `keel run --health ADDR`:
//
//   - GET /livez: 200 while the supervisor answers a question within
//     LiveTimeout; 503 when it does not (its loop is stuck).
//   - GET /readyz: 200 while every app has the instances it needs ready
//     (min_ready, else all of them); 503 as soon as the shutdown has begun,
//     so that the Service stops routing to the pod before its apps drain.
//     A rolling reload keeps the old instance online until its replacement
//     is ready, so /readyz stays 200 through it.
//   - GET /startupz: 200 once every app has been ready at least once.
//
// Every answer is a short JSON object, {"status": …}, and for a 503 the
// apps that are not ready and why. HEAD is answered like GET, without the
// body. The package knows nothing of the supervisor: it reads apps from a
// Source.
package health

import (
	"context"
	"encoding/json"
	"net"
	"time"

	"github.com/keel-run/keel/internal/http1"
)

// LiveTimeout is how long /livez waits for the Source.
const LiveTimeout = 2 * time.Second

// App is one app as the probes see it.
type App struct {
	Name      string `json:"app"`
	Ready     int    `json:"ready"` // instances online
	Need      int    `json:"need"`  // instances that must be online
	ReadyOnce bool   `json:"-"`     // Need were online together at least once
	// Why says, when Ready < Need, what the instances that are not online
	// are doing ("web:1 waiting: exited with code 1; restarting in 400ms").
	Why string `json:"why,omitempty"`
}

// Source returns every app. It is called once per probe and must return
// when ctx is done.
type Source func(ctx context.Context) ([]App, error)

// Checker answers the probes. Its zero value is not usable; fill in
// Source.
type Checker struct {
	Source Source
	// Stopping is closed when the shutdown begins: /readyz is 503 from
	// then on. nil: never.
	Stopping <-chan struct{}
}

// answer is a probe's JSON body.
type answer struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	Apps   []App  `json:"apps,omitempty"` // the ones holding the probe back
}

// Handler answers /livez, /readyz and /startupz.
func (c *Checker) Handler() http1.Handler {
	return func(w *http1.ResponseWriter, r *http1.Request) {
		if r.Method != "GET" && r.Method != "HEAD" {
			w.Header().Set("Allow", "GET, HEAD")
			reply(w, r, 405, answer{Status: "method not allowed"})
			return
		}
		switch r.URL.Path {
		case "/livez":
			ctx, cancel := context.WithTimeout(r.Context(), LiveTimeout)
			defer cancel()
			if _, err := c.Source(ctx); err != nil {
				reply(w, r, 503, answer{Status: "unresponsive", Error: err.Error()})
				return
			}
			reply(w, r, 200, answer{Status: "ok"})
		case "/readyz":
			if c.stopping() {
				reply(w, r, 503, answer{Status: "stopping"})
				return
			}
			apps, err := c.Source(r.Context())
			if err != nil {
				reply(w, r, 503, answer{Status: "unresponsive", Error: err.Error()})
				return
			}
			var short []App
			for _, a := range apps {
				if a.Ready < a.Need {
					short = append(short, a)
				}
			}
			if len(short) > 0 {
				reply(w, r, 503, answer{Status: "not ready", Apps: short})
				return
			}
			reply(w, r, 200, answer{Status: "ready"})
		case "/startupz":
			apps, err := c.Source(r.Context())
			if err != nil {
				reply(w, r, 503, answer{Status: "unresponsive", Error: err.Error()})
				return
			}
			var waiting []App
			for _, a := range apps {
				if !a.ReadyOnce {
					waiting = append(waiting, a)
				}
			}
			if len(waiting) > 0 {
				reply(w, r, 503, answer{Status: "starting", Apps: waiting})
				return
			}
			reply(w, r, 200, answer{Status: "started"})
		default:
			reply(w, r, 404, answer{Status: "not found", Error: "keel answers /livez, /readyz and /startupz"})
		}
	}
}

func (c *Checker) stopping() bool {
	if c.Stopping == nil {
		return false
	}
	select {
	case <-c.Stopping:
		return true
	default:
		return false
	}
}

func reply(w *http1.ResponseWriter, r *http1.Request, code int, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method == "HEAD" {
		return
	}
	b, _ := json.Marshal(a) // plain strings and ints: cannot fail
	w.Write(append(b, '\n'))
}

// Server is an http1.Server that answers the probes: the caller runs its
// Serve on a Listen listener and shuts it down.
func (c *Checker) Server() *http1.Server {
	return &http1.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
	}
}

// Listen opens the --health address: ":9616", "127.0.0.1:9616" or
// "[::]:9616".
func Listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
}
