package http1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// DefaultMaxAnswerBody is how much of an answer's body Client.Do reads
// when its MaxBody is 0.
const DefaultMaxAnswerBody = 64 << 10

// Client makes one request per connection to http:// and https:// URLs,
// for probes and webhooks. It uses no proxy, follows no redirects (a 3xx
// is an answer like any other) and keeps no connection open. The zero
// Client is ready to use; a Client is safe for concurrent use.
type Client struct {
	// Dial opens the TCP connection to addr ("host:port"); nil means a
	// net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig configures https: a copy is used, with ServerName set to
	// the URL's host when empty. Nil means the defaults: the system's
	// roots, certificates verified for the host.
	TLSConfig *tls.Config
	// MaxBody is how much of an answer's body Do reads
	// (DefaultMaxAnswerBody if 0); the rest is never read.
	MaxBody int64
}

// Do sends one request to rawURL — method, the fields of header, body if
// not nil — and returns the answer, whose Body holds at most MaxBody
// bytes of what the server sent. User information in the URL is sent as
// basic authentication. ctx bounds the whole exchange: dialling, the TLS
// handshake, the request and the answer. The connection is closed when Do
// returns.
//
// Do returns an error for a URL that is not http:// or https:// with a
// host; the dialler's error as it is (a *net.OpError that wraps
// ECONNREFUSED, say); and errors sending the request or reading the
// answer, which name what failed and wrap the cause — ctx.Err() if ctx
// ended the exchange.
func (c *Client) Do(ctx context.Context, method, rawURL string, header Header, body []byte) (*Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing URL: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("URL %q: want http://host/path or https://host/path", rawURL)
	}
	port := u.Port()
	switch {
	case port != "":
	case scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	req := &Request{Method: method, Target: u.RequestURI(), Host: u.Host, Header: Header{}, Body: body, Close: true}
	for k, vs := range header {
		req.Header[CanonicalKey(k)] = vs
	}
	if u.User != nil && req.Header.Get("Authorization") == "" {
		pass, _ := u.User.Password()
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass)))
	}

	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// failed names ctx's end as the cause when ctx ended the exchange:
	// the connection then fails with a timeout whatever happened. The
	// connection's deadline may pass a moment before ctx's timer fires.
	failed := func(what string, err error) error {
		cerr := ctx.Err()
		if dl, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
		if cerr != nil {
			return fmt.Errorf("%s: %w", what, cerr)
		}
		return err
	}

	if scheme == "https" {
		cfg := &tls.Config{}
		if c.TLSConfig != nil {
			cfg = c.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			what := "TLS handshake with " + u.Host
			return nil, failed(what, fmt.Errorf("%s: %w", what, err))
		}
		conn = tc
	}
	if err := WriteRequest(conn, req); err != nil {
		return nil, failed("writing the request", err)
	}
	resp, err := ReadResponse(bufio.NewReader(conn), method)
	if err != nil {
		return nil, failed("reading the answer", err)
	}
	limit := c.MaxBody
	if limit <= 0 {
		limit = DefaultMaxAnswerBody
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, failed("reading the answer", fmt.Errorf("reading the answer's body: %w", err))
	}
	resp.Body = bytes.NewReader(b)
	return resp, nil
}
