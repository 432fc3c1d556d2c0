package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/oneline"
	"github.com/keel-run/keel/internal/spec"
)

// maxBody bounds a request body. A start request for many apps is a few KB.
const maxBody = 8 << 20

// DefaultShutdownGrace is how long Serve waits, once its context is done,
// for requests in flight to finish before it closes their connections.
const DefaultShutdownGrace = 10 * time.Second

// Server answers the control protocol (see the package doc) by calling a
// Backend; Serve and ServeListener run it on the control socket. A Server
// may serve several listeners at once.
type Server struct {
	b         Backend
	logger    *slog.Logger
	uid       int
	endpoints []endpoint
	// ShutdownGrace is how long Serve waits for requests in flight once its
	// context is done; DefaultShutdownGrace when zero. Set it before Serve.
	ShutdownGrace time.Duration
}

// NewServer returns a Server that calls b for every request from the
// current process's uid. A nil logger discards.
func NewServer(b Backend, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, logger: logger, uid: os.Getuid()}
	s.endpoints = s.routes()
	return s
}

// Serve binds the control socket at path (see Listen) and serves it until
// ctx is done; then it stops accepting, lets the requests in flight finish
// within ShutdownGrace, closes what is left and returns nil. It returns an
// error if the socket cannot be bound or serving fails. The socket file is
// removed when Serve returns.
func (s *Server) Serve(ctx context.Context, path string) error {
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener the caller made (normally with
// Listen). It closes ln before it returns. Requests on connections that are
// not unix sockets are refused, since their peer cannot be known.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http1.Server{
		Handler:           s.handle,
		ConnContext:       connContext,
		OnRequestError:    s.refuse,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       time.Minute,
		MaxBodyBytes:      maxBody,
		Logger:            s.logger,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving the control socket: %w", err)
	case <-ctx.Done():
	}
	grace := s.ShutdownGrace
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.logger.Warn("control requests still running after the shutdown grace; closing them", "grace", grace)
		srv.Close()
	}
	<-errc // http1.ErrServerClosed
	return nil
}

// handle checks the peer's uid, then dispatches. A refused request gets a
// 403 and reaches no Backend method.
func (s *Server) handle(w *http1.ResponseWriter, r *http1.Request) {
	p, ok := r.Context().Value(peerKey{}).(peer)
	switch {
	case !ok:
		p.err = errors.New("not a unix socket connection")
		fallthrough
	case p.err != nil:
		s.logger.Warn("control request refused: unknown peer", "err", p.err, "path", r.URL.Path)
		w.Header().Set("Connection", "close")
		writeJSON(w, http1.StatusForbidden, api.Error{Error: fmt.Sprintf("keel: refused: cannot tell who is calling (%v)", p.err)})
		return
	case p.uid != s.uid:
		s.logger.Warn("control request refused: foreign uid", "uid", p.uid, "pid", p.pid, "path", r.URL.Path)
		w.Header().Set("Connection", "close")
		writeJSON(w, http1.StatusForbidden, api.Error{Error: fmt.Sprintf("keel: uid %d may not control the daemon of uid %d", p.uid, s.uid)})
		return
	}
	defer s.recoverPanic(w, r)
	start := time.Now()
	s.route(w, r)
	s.logger.Debug("control request", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
}

// refuse answers a request the server could not read, in JSON like every
// other error.
func (s *Server) refuse(w *http1.ResponseWriter, e *http1.RequestError) {
	writeJSON(w, e.Status, api.Error{Error: "keel: request refused: " + e.Msg})
}

// recoverPanic turns a panic in a backend method into a 500, logged with
// slog and answered in JSON; http1.ErrAbortHandler passes on, to close the
// connection without an answer.
func (s *Server) recoverPanic(w *http1.ResponseWriter, r *http1.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http1.ErrAbortHandler {
		panic(v)
	}
	s.logger.Error("panic in control request", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	w.Reset()
	writeJSON(w, http1.StatusInternalServerError, api.Error{Error: fmt.Sprintf("internal error: %v", v)})
}

// endpoint is one route: the method it takes, its path under api.Prefix
// (a last segment "{id}" matches any one segment) and its handler.
type endpoint struct {
	method, path string
	h            handlerFunc
}

type handlerFunc func(w *http1.ResponseWriter, r *http1.Request)

func (s *Server) routes() []endpoint {
	return []endpoint{
		{"POST", "/start", s.start},
		{"POST", "/apply", s.apply},
		{"POST", "/stop", s.target(s.b.Stop)},
		{"POST", "/restart", s.target(s.b.Restart)},
		{"POST", "/reload", s.target(s.b.Reload)},
		{"POST", "/delete", s.target(s.b.Delete)},
		{"POST", "/scale", s.scale},
		{"POST", "/save", s.plain(s.b.Save)},
		{"POST", "/resurrect", s.plain(s.b.Resurrect)},
		{"POST", "/kill", s.kill},
		{"GET", "/list", s.list},
		{"GET", "/describe", s.describe},
		{"GET", "/crashes", s.crashes},
		{"GET", "/crashes/{id}", s.crash},
		{"GET", "/version", s.version},
		{"POST", "/web", s.web},
	}
}

// route calls the endpoint for r's method and path; a path it knows
// called with another method is answered 405, anything else 404, both in
// JSON. A GET endpoint also answers HEAD.
func (s *Server) route(w *http1.ResponseWriter, r *http1.Request) {
	var allow []string
	if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), api.Prefix); ok {
		for _, e := range s.endpoints {
			if !matches(e.path, rest) {
				continue
			}
			if e.method == r.Method || (e.method == "GET" && r.Method == "HEAD") {
				e.h(w, r)
				return
			}
			allow = append(allow, e.method)
		}
	}
	if len(allow) == 0 {
		writeJSON(w, http1.StatusNotFound, api.Error{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
		return
	}
	a := strings.Join(allow, ", ")
	w.Header().Set("Allow", a)
	writeJSON(w, http1.StatusMethodNotAllowed, api.Error{Error: fmt.Sprintf("%s %s: method not allowed (want %s)", r.Method, r.URL.Path, a)})
}

// matches reports whether the escaped path p matches pattern.
func matches(pattern, p string) bool {
	prefix, ok := strings.CutSuffix(pattern, "{id}")
	if !ok {
		return p == pattern
	}
	seg, ok := strings.CutPrefix(p, prefix)
	return ok && seg != "" && !strings.Contains(seg, "/")
}

// pathValue is the unescaped last segment of r's path: the {id}.
func pathValue(r *http1.Request) string {
	p := r.URL.EscapedPath()
	v, err := url.PathUnescape(p[strings.LastIndexByte(p, '/')+1:])
	if err != nil {
		return ""
	}
	return v
}

// badRequest marks an error in the request itself: 400.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badRequestf(format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var nf *spec.NotFoundError
	var br *badRequest
	var fe *spec.FieldError
	switch {
	case errors.As(err, &nf):
		return http1.StatusNotFound
	case errors.As(err, &br), errors.As(err, &fe):
		return http1.StatusBadRequest
	}
	return http1.StatusInternalServerError
}

// reply writes v as JSON, or err as an api.Error.
func (s *Server) reply(w *http1.ResponseWriter, r *http1.Request, v any, err error) {
	if err != nil {
		code := statusOf(err)
		if code == http1.StatusInternalServerError {
			s.logger.Warn("control request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeJSON(w, code, api.Error{Error: oneline.Fold(err.Error(), 0)})
		return
	}
	writeJSON(w, http1.StatusOK, v)
}

func writeJSON(w *http1.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http1.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// decode reads a JSON request body into v. The server has already
// refused a body over maxBody.
func decode(r *http1.Request, v any) error {
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	if err := dec.Decode(v); err != nil {
		return badRequestf("reading the request: %v", err)
	}
	return nil
}

func (s *Server) start(w *http1.ResponseWriter, r *http1.Request) {
	var req api.StartRequest
	if err := decode(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if len(req.Apps) == 0 {
		s.reply(w, r, nil, badRequestf("no apps to start"))
		return
	}
	for i, a := range req.Apps {
		if a == nil {
			s.reply(w, r, nil, badRequestf("app %d is null", i))
			return
		}
	}
	res, err := s.b.Start(r.Context(), req.Apps)
	s.reply(w, r, res, err)
}

func (s *Server) apply(w *http1.ResponseWriter, r *http1.Request) {
	var req api.ApplyRequest
	if err := decode(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	switch req.Mode {
	case api.ApplyStart, api.ApplyRestart, api.ApplyReload:
	default:
		s.reply(w, r, nil, badRequestf("apply: mode %q is not start, restart or reload", req.Mode))
		return
	}
	for i, a := range req.Apps {
		if a == nil {
			s.reply(w, r, nil, badRequestf("app %d is null", i))
			return
		}
	}
	res, err := s.b.Apply(r.Context(), req)
	s.reply(w, r, res, err)
}

// target serves a command that takes an api.TargetRequest.
func (s *Server) target(call func(context.Context, spec.Target) (api.Result, error)) handlerFunc {
	return func(w *http1.ResponseWriter, r *http1.Request) {
		var req api.TargetRequest
		if err := decode(r, &req); err != nil {
			s.reply(w, r, nil, err)
			return
		}
		t, err := spec.ParseTarget(req.Target)
		if err != nil {
			s.reply(w, r, nil, &badRequest{msg: err.Error()})
			return
		}
		res, err := call(r.Context(), t)
		s.reply(w, r, res, err)
	}
}

// plain serves a command without arguments.
func (s *Server) plain(call func(context.Context) (api.Result, error)) handlerFunc {
	return func(w *http1.ResponseWriter, r *http1.Request) {
		res, err := call(r.Context())
		s.reply(w, r, res, err)
	}
}

func (s *Server) scale(w *http1.ResponseWriter, r *http1.Request) {
	var req api.ScaleRequest
	if err := decode(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if !spec.ValidName(req.App) {
		s.reply(w, r, nil, badRequestf("scale: %q is not an app name", req.App))
		return
	}
	if req.Instances < 0 {
		s.reply(w, r, nil, badRequestf("scale %s: instance count %d is negative", req.App, req.Instances))
		return
	}
	res, err := s.b.Scale(r.Context(), req.App, req.Instances)
	s.reply(w, r, res, err)
}

// kill answers and closes the connection; a server shutting down still
// writes the answers of requests in flight, so the answer is out before
// the daemon goes away.
func (s *Server) kill(w *http1.ResponseWriter, r *http1.Request) {
	res, err := s.b.Kill(r.Context())
	w.Header().Set("Connection", "close")
	s.reply(w, r, res, err)
}

func (s *Server) list(w *http1.ResponseWriter, r *http1.Request) {
	l, err := s.b.List(r.Context())
	if l == nil {
		l = []api.Instance{}
	}
	s.reply(w, r, l, err)
}

func (s *Server) describe(w *http1.ResponseWriter, r *http1.Request) {
	ts := r.URL.Query().Get("target")
	if ts == "" {
		ts = "all"
	}
	t, err := spec.ParseTarget(ts)
	if err != nil {
		s.reply(w, r, nil, &badRequest{msg: err.Error()})
		return
	}
	d, err := s.b.Describe(r.Context(), t)
	if d == nil {
		d = []api.AppDetail{}
	}
	s.reply(w, r, d, err)
}

func (s *Server) crashes(w *http1.ResponseWriter, r *http1.Request) {
	app := r.URL.Query().Get("app")
	if app != "" && !spec.ValidName(app) {
		s.reply(w, r, nil, badRequestf("crashes: %q is not an app name", app))
		return
	}
	g, err := s.b.Crashes(r.Context(), app)
	if g == nil {
		g = []api.CrashGroup{}
	}
	s.reply(w, r, g, err)
}

func (s *Server) crash(w *http1.ResponseWriter, r *http1.Request) {
	id := pathValue(r)
	d, err := s.b.Crash(r.Context(), id)
	s.reply(w, r, d, err)
}

func (s *Server) version(w *http1.ResponseWriter, r *http1.Request) {
	s.reply(w, r, s.b.Version(), nil)
}

func (s *Server) web(w *http1.ResponseWriter, r *http1.Request) {
	var req api.WebRequest
	if err := decode(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	info, err := s.b.Web(r.Context(), req)
	s.reply(w, r, info, err)
}
