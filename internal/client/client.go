// Package client is the CLI's side of the control socket: one method per
// control.Backend method, each one HTTP request to the daemon of a
// KEEL_HOME, and EnsureDaemon, which starts that daemon when nobody answers.
//
// Errors the daemon answers come back as *Error carrying the daemon's
// one-line message; a daemon that is not there comes back as an error that
// wraps ErrNoDaemon.
package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/control"
	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/spec"
)

// maxAnswer bounds the body of the daemon's answer that the client reads.
const maxAnswer = 256 << 20

// ErrNoDaemon is wrapped by errors for a control socket that is absent or
// that nothing listens on.
var ErrNoDaemon = errors.New("no keel daemon is running")

// Error is a non-2xx answer of the daemon.
type Error struct {
	Status  int    // the HTTP status: 400, 403, 404, 500…
	Message string // the daemon's one-line message
}

func (e *Error) Error() string { return e.Message }

// IsNotFound reports whether err is the daemon saying a target does not
// exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http1.StatusNotFound
}

// Client talks to the daemon of one KEEL_HOME. Its methods are safe for
// concurrent use. Each request is one connection: HTTP/1.1 written and read
// directly on the unix socket with internal/http1, which costs a fraction
// of what net/http does for the one request a CLI makes.
type Client struct {
	home string
	sock string
}

// New returns a client for the daemon whose state lives in home. It does
// not connect.
func New(home string) *Client {
	return &Client{home: home, sock: control.SocketPath(home)}
}

// Home is the KEEL_HOME the client serves.
func (c *Client) Home() string { return c.home }

// Socket is the path of the control socket.
func (c *Client) Socket() string { return c.sock }

// Close releases what the client holds. It holds nothing between
// requests today; call it anyway.
func (c *Client) Close() {}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if len(c.sock) > control.MaxSocketPath {
		return nil, fmt.Errorf("control socket path %s is longer than %d bytes: use a shorter KEEL_HOME", c.sock, control.MaxSocketPath)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.sock)
	if err != nil && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
		return nil, fmt.Errorf("%w (nothing answers on %s)", ErrNoDaemon, c.sock)
	}
	return conn, err
}

// Ping connects to the control socket and hangs up. It returns nil if a
// daemon accepts connections, an error wrapping ErrNoDaemon if the socket is
// absent or refuses, and any other error as it is.
func (c *Client) Ping(ctx context.Context) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	return conn.Close()
}

// do sends one request and decodes a 2xx answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	req := &http1.Request{Method: method, Target: api.Prefix + path, Host: "keel", Header: http1.Header{}}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding the request: %w", err)
		}
		req.Body = b
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "keel")
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The connection obeys ctx: cancelling it unblocks reads and writes.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	b, resp, err := roundTrip(conn, req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("talking to the daemon on %s: %w", c.sock, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("daemon answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	return nil
}

// roundTrip writes req on conn and reads the answer and its whole body.
func roundTrip(conn net.Conn, req *http1.Request) ([]byte, *http1.Response, error) {
	if err := http1.WriteRequest(conn, req); err != nil {
		return nil, nil, err
	}
	resp, err := http1.ReadResponse(bufio.NewReader(conn), req.Method)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	if len(b) > maxAnswer {
		return nil, nil, fmt.Errorf("reading the answer: longer than %d bytes", maxAnswer)
	}
	return b, resp, nil
}

func (c *Client) command(ctx context.Context, path string, in any) (api.Result, error) {
	var res api.Result
	err := c.do(ctx, "POST", path, in, &res)
	return res, err
}

// Start defines apps and starts them.
func (c *Client) Start(ctx context.Context, apps []*spec.App) (api.Result, error) {
	return c.command(ctx, "/start", api.StartRequest{Apps: apps})
}

// Apply makes the running apps match req.Apps (see api.ApplyRequest).
func (c *Client) Apply(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	var res api.ApplyResult
	err := c.do(ctx, "POST", "/apply", req, &res)
	return res, err
}

// Stop stops the target gracefully.
func (c *Client) Stop(ctx context.Context, t spec.Target) (api.Result, error) {
	return c.command(ctx, "/stop", api.TargetRequest{Target: t.String()})
}

// Restart stops then starts the target.
func (c *Client) Restart(ctx context.Context, t spec.Target) (api.Result, error) {
	return c.command(ctx, "/restart", api.TargetRequest{Target: t.String()})
}

// Reload replaces the target's instances one by one without downtime.
func (c *Client) Reload(ctx context.Context, t spec.Target) (api.Result, error) {
	return c.command(ctx, "/reload", api.TargetRequest{Target: t.String()})
}

// Delete stops the target and forgets it.
func (c *Client) Delete(ctx context.Context, t spec.Target) (api.Result, error) {
	return c.command(ctx, "/delete", api.TargetRequest{Target: t.String()})
}

// Scale sets an app's instance count.
func (c *Client) Scale(ctx context.Context, app string, n int) (api.Result, error) {
	return c.command(ctx, "/scale", api.ScaleRequest{App: app, Instances: n})
}

// Save persists the running set to the dump file.
func (c *Client) Save(ctx context.Context) (api.Result, error) {
	return c.command(ctx, "/save", nil)
}

// Resurrect restores the running set from the dump file.
func (c *Client) Resurrect(ctx context.Context) (api.Result, error) {
	return c.command(ctx, "/resurrect", nil)
}

// Kill stops every app, then the daemon. It returns once the daemon has
// answered; the daemon exits right after.
func (c *Client) Kill(ctx context.Context) (api.Result, error) {
	return c.command(ctx, "/kill", nil)
}

// List returns every instance; never nil on success.
func (c *Client) List(ctx context.Context) ([]api.Instance, error) {
	l := []api.Instance{}
	err := c.do(ctx, "GET", "/list", nil, &l)
	if l == nil {
		l = []api.Instance{}
	}
	return l, err
}

// Describe returns everything known about the target's apps.
func (c *Client) Describe(ctx context.Context, t spec.Target) ([]api.AppDetail, error) {
	d := []api.AppDetail{}
	err := c.do(ctx, "GET", "/describe?target="+url.QueryEscape(t.String()), nil, &d)
	if d == nil {
		d = []api.AppDetail{}
	}
	return d, err
}

// Crashes returns the crash groups of app, or of every app if app is "".
func (c *Client) Crashes(ctx context.Context, app string) ([]api.CrashGroup, error) {
	path := "/crashes"
	if app != "" {
		path += "?app=" + url.QueryEscape(app)
	}
	g := []api.CrashGroup{}
	err := c.do(ctx, "GET", path, nil, &g)
	if g == nil {
		g = []api.CrashGroup{}
	}
	return g, err
}

// Crash returns one crash group with the exits it covers.
func (c *Client) Crash(ctx context.Context, id string) (api.CrashDetail, error) {
	var d api.CrashDetail
	err := c.do(ctx, "GET", "/crashes/"+url.PathEscape(id), nil, &d)
	return d, err
}

// Version returns the daemon's identity.
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	err := c.do(ctx, "GET", "/version", nil, &v)
	return v, err
}

// Web switches the daemon's web listener.
func (c *Client) Web(ctx context.Context, req api.WebRequest) (api.WebInfo, error) {
	var info api.WebInfo
	err := c.do(ctx, "POST", "/web", req, &info)
	return info, err
}

// Home returns the KEEL_HOME that getenv describes: $KEEL_HOME, or
// $HOME/.keel when it is unset, made absolute. It does not create it.
func Home(getenv func(string) string) (string, error) {
	h := getenv("KEEL_HOME")
	if h == "" {
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("neither KEEL_HOME nor HOME is set: set KEEL_HOME to keel's state directory")
		}
		h = filepath.Join(home, ".keel")
	}
	abs, err := filepath.Abs(h)
	if err != nil {
		return "", fmt.Errorf("KEEL_HOME %s: %w", h, err)
	}
	return abs, nil
}
