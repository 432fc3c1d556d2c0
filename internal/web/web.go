// Package web is the daemon's optional HTTP listener (`keel web`): the
// dashboard at /, its data, live updates and actions under /api/ behind a
// login token, and /metrics for Prometheus without one. It is built on
// internal/http1, like the control socket, so the daemon links no
// net/http; and it exists only while switched on: with the listener off,
// nothing of this package runs.
//
// Authentication: every /api/ request carries the token in a header,
// "Authorization: Bearer <token>" (or "X-Keel-Token: <token>"), compared
// in constant time. No cookie is used, so another site cannot make a
// browser send it; /api/ answers no CORS preflight, so another site's
// script cannot send the header either. A missing or wrong token gets 401
// and no data. The dashboard page itself holds no data: it reads the token
// from its URL's fragment and asks /api/ for everything.
//
// Endpoints:
//
//	GET  /                 the dashboard (embedded assets under /assets/)
//	GET  /metrics          Prometheus text, or OpenMetrics by Accept (metrics package)
//	GET  /api/state        instances and crash groups, JSON
//	GET  /api/events       Server-Sent Events: "state" on every change (checked
//	                       every 250 ms), "history" once (per-app CPU and memory, 15 min)
//	GET  /api/logs?app=A   Server-Sent Events: "log", one JSON line each, live tail
//	POST /api/action       {"action":"restart|reload|stop|start|scale","target":"app[:n]","instances":n}
package web

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/metrics"
	"github.com/keel-run/keel/internal/spec"
)

//go:embed assets
var assets embed.FS

// Backend is what the listener calls: the daemon implements it. Every
// method may be called concurrently.
type Backend interface {
	List(ctx context.Context) ([]api.Instance, error)
	Crashes(ctx context.Context, app string) ([]api.CrashGroup, error)
	Stop(ctx context.Context, t spec.Target) (api.Result, error)
	Restart(ctx context.Context, t spec.Target) (api.Result, error)
	Reload(ctx context.Context, t spec.Target) (api.Result, error)
	// StartStopped starts the target's instances that do not run.
	StartStopped(ctx context.Context, t spec.Target) (api.Result, error)
	Scale(ctx context.Context, app string, n int) (api.Result, error)
	// WriteMetrics renders one scrape.
	WriteMetrics(ctx context.Context, w io.Writer, f metrics.Format) error
	// FollowLogs writes the target's last lines, then new ones as they
	// come, one JSON object a line, until ctx is done.
	FollowLogs(ctx context.Context, w io.Writer, t spec.Target, lines int) error
}

// Limits of the listener: it faces a browser or a scraper, never a large
// upload.
const (
	maxHeaderBytes = 16 << 10
	maxBodyBytes   = 64 << 10
	// maxConns bounds the connections served at once; beyond, new ones are
	// closed at once, so a flood cannot grow the daemon's memory.
	maxConns = 256
	// tick is how often a live stream checks for a change.
	tick = 250 * time.Millisecond
)

// Server is a running listener. Start it with Serve; stop it with Close.
type Server struct {
	b     Backend
	token []byte
	log   *slog.Logger
	srv   *http1.Server
	hist  *history
	// lastScrape is the size of the last /metrics answer.
	lastScrape atomic.Int64

	stopHist context.CancelFunc
	wg       sync.WaitGroup
}

// Serve starts serving ln with token; it returns at once. The caller
// must Close the Server.
func Serve(ln net.Listener, token string, b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, token: []byte(token), log: log, hist: newHistory()}
	s.srv = &http1.Server{
		Handler:           s.handle,
		OnRequestError:    refuse,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		MaxBodyBytes:      maxBodyBytes,
		Logger:            log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopHist = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.hist.run(ctx, b)
	}()
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(limitListener(ln, maxConns)); err != nil && !errors.Is(err, http1.ErrServerClosed) {
			log.Error("web listener stopped", "err", err)
		}
	}()
	return s
}

// Close stops the listener: open streams end, requests in flight get a
// moment to finish, then everything is closed. It waits for every
// goroutine of the Server.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	s.stopHist()
	s.wg.Wait()
}

func refuse(w *http1.ResponseWriter, e *http1.RequestError) {
	writeJSON(w, e.Status, api.Error{Error: "request refused: " + e.Msg})
}

func writeJSON(w *http1.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http1.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func (s *Server) handle(w *http1.ResponseWriter, r *http1.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http1.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic in a web request", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			w.Reset()
			writeJSON(w, http1.StatusInternalServerError, api.Error{Error: fmt.Sprintf("internal error: %v", v)})
		}
	}()
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	route(s, w, r)
}

// route dispatches by path and method; see the package doc.
func route(s *Server, w *http1.ResponseWriter, r *http1.Request) {
	p := r.URL.Path
	get := r.Method == "GET" || r.Method == "HEAD"
	switch {
	case p == "/metrics":
		if !get {
			methodNotAllowed(w, r, "GET")
			return
		}
		s.metrics(w, r)
	case p == "/" || p == "/index.html" || strings.HasPrefix(p, "/assets/"):
		if !get {
			methodNotAllowed(w, r, "GET")
			return
		}
		s.asset(w, r)
	case strings.HasPrefix(p, "/api/"):
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keel"`)
			writeJSON(w, http1.StatusUnauthorized, api.Error{Error: "missing or wrong token: run keel web to see the dashboard's URL with its token"})
			return
		}
		switch p {
		case "/api/state":
			if !get {
				methodNotAllowed(w, r, "GET")
				return
			}
			s.state(w, r)
		case "/api/events":
			if !get {
				methodNotAllowed(w, r, "GET")
				return
			}
			s.events(w, r)
		case "/api/logs":
			if !get {
				methodNotAllowed(w, r, "GET")
				return
			}
			s.logs(w, r)
		case "/api/action":
			if r.Method != "POST" {
				methodNotAllowed(w, r, "POST")
				return
			}
			s.action(w, r)
		default:
			writeJSON(w, http1.StatusNotFound, api.Error{Error: "no such endpoint: " + p})
		}
	default:
		writeJSON(w, http1.StatusNotFound, api.Error{Error: "no such page: " + p})
	}
}

func methodNotAllowed(w *http1.ResponseWriter, r *http1.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http1.StatusMethodNotAllowed, api.Error{Error: fmt.Sprintf("%s %s: method not allowed (want %s)", r.Method, r.URL.Path, allow)})
}

// authorized compares the request's token with the listener's in
// constant time.
func (s *Server) authorized(r *http1.Request) bool {
	got := r.Header.Get("X-Keel-Token")
	if a := r.Header.Get("Authorization"); got == "" && len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		got = strings.TrimSpace(a[7:])
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), s.token) == 1
}

func (s *Server) metrics(w *http1.ResponseWriter, r *http1.Request) {
	f := metrics.Negotiate(r.Header.Get("Accept"))
	// Rendered straight into the answer, which has room for as much as
	// the last scrape: one buffer a scrape, never regrown and copied.
	w.Grow(int(s.lastScrape.Load()) + 4096)
	w.Header().Set("Content-Type", f.ContentType())
	w.Header().Set("Cache-Control", "no-store")
	n := &countingWriter{w: w}
	if err := s.b.WriteMetrics(r.Context(), n, f); err != nil {
		w.Reset()
		writeJSON(w, http1.StatusInternalServerError, api.Error{Error: "collecting metrics: " + err.Error()})
		return
	}
	s.lastScrape.Store(n.n)
}

// contentType is the Content-Type of an embedded asset (a switch, not a
// map: nothing of this package is built at init).
func contentType(ext string) string {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".txt":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

func (s *Server) asset(w *http1.ResponseWriter, r *http1.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name == "" || name == "index.html" {
		name = "index.html"
	} else {
		name = strings.TrimPrefix(name, "assets/")
	}
	name = path.Clean(name)
	b, err := fs.ReadFile(assets, "assets/"+name)
	if err != nil || strings.Contains(name, "..") {
		writeJSON(w, http1.StatusNotFound, api.Error{Error: "no such page: " + r.URL.Path})
		return
	}
	w.Header().Set("Content-Type", contentType(path.Ext(name)))
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// stateDoc is /api/state and each "state" event.
type stateDoc struct {
	Time      time.Time        `json:"time"`
	Instances []api.Instance   `json:"instances"`
	Crashes   []api.CrashGroup `json:"crashes"`
}

func (s *Server) snapshot(ctx context.Context) (stateDoc, error) {
	l, err := s.b.List(ctx)
	if err != nil {
		return stateDoc{}, err
	}
	c, err := s.b.Crashes(ctx, "")
	if err != nil {
		return stateDoc{}, err
	}
	if l == nil {
		l = []api.Instance{}
	}
	if c == nil {
		c = []api.CrashGroup{}
	}
	return stateDoc{Time: time.Now(), Instances: l, Crashes: c}, nil
}

func (s *Server) state(w *http1.ResponseWriter, r *http1.Request) {
	d, err := s.snapshot(r.Context())
	if err != nil {
		writeJSON(w, http1.StatusInternalServerError, api.Error{Error: err.Error()})
		return
	}
	writeJSON(w, http1.StatusOK, d)
}

func sseHead(w *http1.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
}

// writeEvent writes one Server-Sent Event whose data is one line.
func writeEvent(out io.Writer, name string, data []byte) error {
	var b bytes.Buffer
	b.Grow(len(name) + len(data) + 16)
	b.WriteString("event: ")
	b.WriteString(name)
	b.WriteString("\ndata: ")
	b.Write(data)
	b.WriteString("\n\n")
	_, err := out.Write(b.Bytes())
	return err
}

// events streams "history" once, then "state" whenever an instance's
// figures change (checked every tick), and a comment every 15 s to keep
// proxies from closing an idle stream.
func (s *Server) events(w *http1.ResponseWriter, r *http1.Request) {
	sseHead(w)
	w.Stream(func(ctx context.Context, out io.Writer) error {
		h, _ := json.Marshal(s.hist.points())
		if err := writeEvent(out, "history", h); err != nil {
			return err
		}
		t := time.NewTicker(tick)
		defer t.Stop()
		var last []byte
		lastSent := time.Now()
		for {
			d, err := s.snapshot(ctx)
			if err == nil {
				// Uptime moves every tick; compare without it, and send at
				// least every few seconds so uptimes stay current.
				cmp := d
				cmp.Time = time.Time{}
				cmp.Instances = append([]api.Instance(nil), d.Instances...)
				for i := range cmp.Instances {
					cmp.Instances[i].UptimeMs = 0
				}
				key, _ := json.Marshal(cmp)
				if !bytes.Equal(key, last) || time.Since(lastSent) >= 5*time.Second {
					b, _ := json.Marshal(d)
					if err := writeEvent(out, "state", b); err != nil {
						return err
					}
					last, lastSent = key, time.Now()
				}
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
}

// sseLines turns the JSON lines FollowLogs writes into "log" events.
type sseLines struct {
	out  io.Writer
	part []byte
}

func (l *sseLines) Write(p []byte) (int, error) {
	n := len(p)
	var b bytes.Buffer
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.part = append(l.part, p...)
			break
		}
		line := p[:i]
		if len(l.part) > 0 {
			line = append(l.part, line...)
			l.part = l.part[:0]
		}
		b.WriteString("event: log\ndata: ")
		b.Write(line)
		b.WriteString("\n\n")
		p = p[i+1:]
	}
	if b.Len() > 0 {
		if _, err := l.out.Write(b.Bytes()); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (s *Server) logs(w *http1.ResponseWriter, r *http1.Request) {
	q := r.URL.Query()
	t := spec.Target{Instance: -1}
	if a := q.Get("app"); a != "" {
		var err error
		if t, err = spec.ParseTarget(a); err != nil {
			writeJSON(w, http1.StatusBadRequest, api.Error{Error: err.Error()})
			return
		}
	}
	lines := 200
	if v := q.Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 10000 {
			writeJSON(w, http1.StatusBadRequest, api.Error{Error: fmt.Sprintf("lines %q: want a number from 0 to 10000", v)})
			return
		}
		lines = n
	}
	sseHead(w)
	w.Stream(func(ctx context.Context, out io.Writer) error {
		if _, err := io.WriteString(out, ": log tail\n\n"); err != nil {
			return err
		}
		return s.b.FollowLogs(ctx, &sseLines{out: out}, t, lines)
	})
}

// actionRequest is POST /api/action's body.
type actionRequest struct {
	Action    string `json:"action"`
	Target    string `json:"target"`
	Instances int    `json:"instances,omitempty"`
}

func (s *Server) action(w *http1.ResponseWriter, r *http1.Request) {
	var req actionRequest
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http1.StatusBadRequest, api.Error{Error: "reading the action: " + err.Error()})
		return
	}
	t, err := spec.ParseTarget(req.Target)
	if err != nil || t.IsAll() && req.Target != "all" {
		writeJSON(w, http1.StatusBadRequest, api.Error{Error: fmt.Sprintf("action %s: target %q: want app or app:instance", req.Action, req.Target)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	var res api.Result
	switch req.Action {
	case "restart":
		res, err = s.b.Restart(ctx, t)
	case "reload":
		res, err = s.b.Reload(ctx, t)
	case "stop":
		res, err = s.b.Stop(ctx, t)
	case "start":
		res, err = s.b.StartStopped(ctx, t)
	case "scale":
		if t.IsAll() || t.Instance >= 0 || req.Instances < 1 || req.Instances > 1024 {
			writeJSON(w, http1.StatusBadRequest, api.Error{Error: fmt.Sprintf("scale %q to %d: want one app and 1 to 1024 instances", req.Target, req.Instances)})
			return
		}
		res, err = s.b.Scale(ctx, t.App, req.Instances)
	default:
		writeJSON(w, http1.StatusBadRequest, api.Error{Error: fmt.Sprintf("action %q: want restart, reload, stop, start or scale", req.Action)})
		return
	}
	if err != nil {
		code := http1.StatusInternalServerError
		if strings.Contains(err.Error(), "not found") {
			code = http1.StatusNotFound
		}
		writeJSON(w, code, api.Error{Error: err.Error()})
		return
	}
	s.log.Info("web action", "action", req.Action, "target", req.Target, "instances", req.Instances)
	writeJSON(w, http1.StatusOK, res)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
