// Package ready probes whether an app is ready to serve, for the tcp://
// and http:// readiness modes: a tcp target is ready when a connection to
// it succeeds, an http target when a GET answers with a 2xx status
// (redirects are not followed, so a 3xx is not ready).
//
// Wait polls a target at a short interval until it is ready or the
// context is done. Probes use no proxy and keep no connections open.
package ready

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/internal/http1"
)

// DefaultInterval is the pause between probes when Wait is given none.
const DefaultInterval = 50 * time.Millisecond

// attemptTimeout bounds one probe.
const attemptTimeout = 2 * time.Second

// Probe is one parsed readiness target. It is safe for concurrent use.
type Probe struct {
	target string
	addr   string // tcp: host:port
	url    string // http: the URL to GET
	client http1.Client
}

// Parse reads "tcp://host:port" or "http://host:port/path". An empty host
// means this machine.
func Parse(target string) (*Probe, error) {
	if rest, ok := strings.CutPrefix(target, "tcp://"); ok {
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return nil, fmt.Errorf("ready target %q: want tcp://host:port: %w", target, err)
		}
		return &Probe{target: target, addr: rest}, nil
	}
	if strings.HasPrefix(target, "http://") {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("ready target %q: want http://host:port/path", target)
		}
		// http1.Client uses no proxy, keeps no connection and follows no
		// redirect.
		return &Probe{target: target, url: u.String()}, nil
	}
	return nil, fmt.Errorf("ready target %q: want tcp://host:port or http://host:port/path", target)
}

// String is the target as given to Parse.
func (p *Probe) String() string { return p.target }

// Check probes once. It returns nil when the target is ready, and the
// reason it is not otherwise.
func (p *Probe) Check(ctx context.Context) error {
	if p.url == "" {
		ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	return Get(ctx, &p.client, p.url, "keel-ready-probe", attemptTimeout)
}

// Get is one HTTP probe, shared by the http:// readiness mode and the
// health_url trigger: a GET of url with the User-Agent agent, bounded by
// timeout. It returns nil for a 2xx answer, else a *GetError that says
// why not. Redirects are not followed, so a 3xx fails.
func Get(ctx context.Context, client *http1.Client, url, agent string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := client.Do(ctx, "GET", url, http1.Header{"User-Agent": {agent}}, nil)
	if err != nil {
		return &GetError{URL: url, Err: err, timeout: timeout}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &GetError{URL: url, Status: resp.StatusCode, StatusLine: resp.Status}
	}
	return nil
}

// GetError is a failed Get: no answer (Err), or an answer that is not 2xx
// (Status).
type GetError struct {
	URL        string
	Status     int    // 0 when there was no answer
	StatusLine string // "503 Service Unavailable"
	Err        error  // why there was no answer
	timeout    time.Duration
}

func (e *GetError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("GET %s: %v", e.URL, e.Err)
	}
	return fmt.Sprintf("GET %s: %s", e.URL, e.StatusLine)
}

func (e *GetError) Unwrap() error { return e.Err }

// Reason is why, in a few words: the status code, "connection refused",
// "timeout after 5s", or the error.
func (e *GetError) Reason() string {
	var ne net.Error
	switch {
	case e.Err == nil:
		return strconv.Itoa(e.Status)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(e.Err, &ne) && ne.Timeout(), errors.Is(e.Err, context.DeadlineExceeded):
		return "timeout after " + e.timeout.String()
	}
	return e.Err.Error()
}

// Wait probes at once and then every interval (DefaultInterval if 0)
// until a probe succeeds, and returns nil; or until ctx is done, and
// returns an error wrapping ctx.Err() and the last probe's error.
func (p *Probe) Wait(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("not probed")
			}
			return fmt.Errorf("%s not ready: %w (last probe: %w)", p.target, ctx.Err(), last)
		case <-t.C:
		}
		if last = p.Check(ctx); last == nil {
			return nil
		}
		t.Reset(interval)
	}
}

// Wait parses target and waits for it; see Probe.Wait.
func Wait(ctx context.Context, target string, interval time.Duration) error {
	p, err := Parse(target)
	if err != nil {
		return err
	}
	return p.Wait(ctx, interval)
}
