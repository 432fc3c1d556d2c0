package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/spec"
)

// maxBody bounds a request body. A start request for many apps is a few KB.
const maxBody = 8 << 20

// DefaultShutdownGrace is how long Serve waits, once its context is done,
// for requests in flight to finish before it closes their connections.
const DefaultShutdownGrace = 10 * time.Second

// Server answers the control protocol (see the package doc) by calling a
// Backend. It is an http.Handler; Serve and ServeListener run it on the
// control socket. A Server may serve several listeners at once.
type Server struct {
	b      Backend
	logger *slog.Logger
	uid    int
	mux    *http.ServeMux
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
	s := &Server{b: b, logger: logger, uid: os.Getuid(), mux: http.NewServeMux()}
	s.routes()
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
	srv := &http.Server{
		Handler:           s,
		ConnContext:       connContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
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
	<-errc // http.ErrServerClosed
	return nil
}

// ServeHTTP checks the peer's uid, then dispatches. A refused request gets
// a 403 and reaches no Backend method.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := r.Context().Value(peerKey{}).(peer)
	switch {
	case !ok:
		p.err = errors.New("not a unix socket connection")
		fallthrough
	case p.err != nil:
		s.logger.Warn("control request refused: unknown peer", "err", p.err, "path", r.URL.Path)
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusForbidden, api.Error{Error: fmt.Sprintf("keel: refused: cannot tell who is calling (%v)", p.err)})
		return
	case p.uid != s.uid:
		s.logger.Warn("control request refused: foreign uid", "uid", p.uid, "pid", p.pid, "path", r.URL.Path)
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusForbidden, api.Error{Error: fmt.Sprintf("keel: uid %d may not control the daemon of uid %d", p.uid, s.uid)})
		return
	}
	defer s.recoverPanic(w, r)
	start := time.Now()
	s.mux.ServeHTTP(w, r)
	s.logger.Debug("control request", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
}

// recoverPanic turns a panic in a backend method into a 500, as net/http
// would do for itself, but logged with slog and answered in JSON.
func (s *Server) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.logger.Error("panic in control request", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	writeJSON(w, http.StatusInternalServerError, api.Error{Error: fmt.Sprintf("internal error: %v", v)})
}

// endpoint is one route: the method it takes and its handler.
type endpoint struct {
	method, path string
	h            http.HandlerFunc
}

func (s *Server) endpoints() []endpoint {
	return []endpoint{
		{"POST", "/start", s.start},
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
	}
}

func (s *Server) routes() {
	methods := map[string][]string{}
	for _, e := range s.endpoints() {
		s.mux.HandleFunc(e.method+" "+api.Prefix+e.path, e.h)
		methods[e.path] = append(methods[e.path], e.method)
	}
	// Everything else: JSON errors instead of net/http's plain text.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	for path, ms := range methods {
		allow := strings.Join(ms, ", ")
		s.mux.HandleFunc(api.Prefix+path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeJSON(w, http.StatusMethodNotAllowed, api.Error{Error: fmt.Sprintf("%s %s: method not allowed (want %s)", r.Method, r.URL.Path, allow)})
		})
	}
}

// badRequest marks an error in the request itself: 400.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badRequestf(format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var nf *NotFoundError
	var br *badRequest
	var fe *spec.FieldError
	switch {
	case errors.As(err, &nf):
		return http.StatusNotFound
	case errors.As(err, &br), errors.As(err, &fe):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// reply writes v as JSON, or err as an api.Error.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		code := statusOf(err)
		if code == http.StatusInternalServerError {
			s.logger.Warn("control request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeJSON(w, code, api.Error{Error: oneLine(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// oneLine folds a multi-line message so the CLI can print it as one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), "; ")
}

// decode reads a JSON request body into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return badRequestf("reading the request: %v", err)
	}
	return nil
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	var req api.StartRequest
	if err := decode(w, r, &req); err != nil {
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

// target serves a command that takes an api.TargetRequest.
func (s *Server) target(call func(context.Context, spec.Target) (api.Result, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.TargetRequest
		if err := decode(w, r, &req); err != nil {
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
func (s *Server) plain(call func(context.Context) (api.Result, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, err := call(r.Context())
		s.reply(w, r, res, err)
	}
}

func (s *Server) scale(w http.ResponseWriter, r *http.Request) {
	var req api.ScaleRequest
	if err := decode(w, r, &req); err != nil {
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

// kill answers, flushes the answer and asks the client to close the
// connection, so the answer is out before the daemon goes away.
func (s *Server) kill(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.Kill(r.Context())
	w.Header().Set("Connection", "close")
	s.reply(w, r, res, err)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	l, err := s.b.List(r.Context())
	if l == nil {
		l = []api.Instance{}
	}
	s.reply(w, r, l, err)
}

func (s *Server) describe(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) crashes(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) crash(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := s.b.Crash(r.Context(), id)
	s.reply(w, r, d, err)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	s.reply(w, r, s.b.Version(), nil)
}
