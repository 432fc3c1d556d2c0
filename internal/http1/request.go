package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultMaxBodyBytes bounds a request's body, unless told otherwise.
const DefaultMaxBodyBytes = 1 << 20

// Request is one request: as a Server or ReadRequest read it, or as
// WriteRequest writes it.
type Request struct {
	Method string // "GET", "POST", …
	// Target is the request-target as on the request line, normally a
	// path and query: "/v1/describe?target=web".
	Target string
	// URL is Target parsed. ReadRequest sets it; WriteRequest ignores it.
	URL *url.URL
	// Proto is the version on the request line: "HTTP/1.1" or "HTTP/1.0".
	// WriteRequest always writes HTTP/1.1.
	Proto string
	// Host is the Host field, which is not in Header.
	Host string
	// Header holds the other fields. WriteRequest writes Content-Length,
	// Transfer-Encoding and Connection itself, never from Header.
	Header Header
	// Body is the whole body, nil for none.
	Body []byte
	// Close, read: the client asked for the connection to be closed after
	// the answer. Written: ask the server to close it.
	Close bool

	expectContinue bool
	ctx            context.Context
}

// Context is the request's context. A Server cancels it when the client
// hangs up or the handler returns; it carries what the server's
// ConnContext put in it. It is never nil.
func (r *Request) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}

// RequestError is a request the server could not accept: it is answered
// with Status and Msg, then the connection is closed.
type RequestError struct {
	Status int    // 400, 413, 417, 431, 501 or 505
	Msg    string // one line: what was wrong
}

func (e *RequestError) Error() string { return e.Msg }

func refuse(status int, format string, args ...any) *RequestError {
	return &RequestError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// ReadRequest reads one request from br, its request line and header
// fields taking at most maxHeaderBytes (DefaultMaxHeaderBytes if 0) and
// its body at most maxBodyBytes (DefaultMaxBodyBytes if 0). It returns
//   - the request, with its whole body;
//   - io.EOF if br ended before the request's first byte;
//   - a *RequestError for a request that is malformed (400), too large
//     (431, 413), has a Transfer-Encoding (501: only bodies framed by
//     Content-Length are read), an Expect other than 100-continue (417)
//     or a version other than HTTP/1.0 and 1.1 (505);
//   - any other error from br (io.ErrUnexpectedEOF if it ended early),
//     wrapped.
//
// It does not answer Expect: 100-continue; a Server does.
func ReadRequest(br *bufio.Reader, maxHeaderBytes int, maxBodyBytes int64) (*Request, error) {
	r, n, err := readHead(br, maxHeaderBytes, maxBodyBytes)
	if err != nil {
		return nil, err
	}
	if err := readBody(br, r, n); err != nil {
		return nil, err
	}
	return r, nil
}

// readHead reads a request up to its body, and returns the body's length.
func readHead(br *bufio.Reader, maxHeaderBytes int, maxBodyBytes int64) (*Request, int64, error) {
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = DefaultMaxHeaderBytes
	}
	if maxBodyBytes <= 0 {
		maxBodyBytes = DefaultMaxBodyBytes
	}
	budget := maxHeaderBytes
	headErr := func(err error) error {
		var se *syntaxError
		switch {
		case errors.As(err, &se):
			return refuse(StatusBadRequest, "%s", se.msg)
		case errors.Is(err, errHeaderTooLarge):
			return refuse(StatusRequestHeaderFieldsTooLarge, "request line and header over %d bytes", maxHeaderBytes)
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading the request: %w", err)
	}
	var line []byte
	for first := true; ; first = false {
		// A client may send an empty line or two before a request
		// (RFC 9112 2.2); they count towards the budget.
		var err error
		line, err = readLine(br, &budget)
		if err == io.EOF && first {
			return nil, 0, io.EOF
		}
		if err != nil {
			return nil, 0, headErr(err)
		}
		if len(line) > 0 {
			break
		}
	}
	r := &Request{}
	if err := r.parseRequestLine(string(line)); err != nil {
		return nil, 0, err
	}
	h, err := readHeader(br, &budget)
	if err != nil {
		return nil, 0, headErr(err)
	}
	r.Header = h

	hosts := h["Host"]
	delete(h, "Host")
	switch {
	case len(hosts) > 1:
		return nil, 0, refuse(StatusBadRequest, "%d Host fields, want one", len(hosts))
	case len(hosts) == 1:
		r.Host = hosts[0]
	case r.Proto == "HTTP/1.1":
		return nil, 0, refuse(StatusBadRequest, "no Host field: HTTP/1.1 requires one")
	}
	if te := h["Transfer-Encoding"]; len(te) > 0 {
		return nil, 0, refuse(StatusNotImplemented, "Transfer-Encoding %q is not supported: send the body with a Content-Length", strings.Join(te, ", "))
	}
	n, err := contentLength(h["Content-Length"])
	if err != nil {
		return nil, 0, refuse(StatusBadRequest, "%v", err)
	}
	if n > maxBodyBytes {
		return nil, 0, refuse(StatusRequestEntityTooLarge, "request body of %d bytes is over the %d allowed", n, maxBodyBytes)
	}
	if exp := h.Get("Expect"); exp != "" && r.Proto == "HTTP/1.1" {
		if !strings.EqualFold(exp, "100-continue") {
			return nil, 0, refuse(StatusExpectationFailed, "Expect %q is not supported", exp)
		}
		r.expectContinue = n > 0
	}
	if r.Proto == "HTTP/1.0" {
		r.Close = !h.has("Connection", "keep-alive")
	} else {
		r.Close = h.has("Connection", "close")
	}
	return r, n, nil
}

// parseRequestLine reads "METHOD target HTTP/1.1" into r.
func (r *Request) parseRequestLine(line string) error {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return refuse(StatusBadRequest, "malformed request line %q", truncate([]byte(line)))
	}
	if !validToken(method) {
		return refuse(StatusBadRequest, "method %q is not a token", truncate([]byte(method)))
	}
	if !validTarget(target) {
		return refuse(StatusBadRequest, "malformed request target %q", truncate([]byte(target)))
	}
	switch proto {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		if len(proto) == 8 && strings.HasPrefix(proto, "HTTP/") && isDigit(proto[5]) && proto[6] == '.' && isDigit(proto[7]) {
			return refuse(StatusHTTPVersionNotSupported, "%s is not supported: speak HTTP/1.1", proto)
		}
		return refuse(StatusBadRequest, "malformed version %q on the request line", truncate([]byte(proto)))
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return refuse(StatusBadRequest, "malformed request target %q", truncate([]byte(target)))
	}
	r.Method, r.Target, r.URL, r.Proto = method, target, u, proto
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validTarget reports whether s can stand on a request line: not empty,
// no spaces or control characters.
func validTarget(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// contentLength reads the Content-Length fields: none is 0; several must
// agree.
func contentLength(values []string) (int64, error) {
	n := int64(-1)
	for _, v := range values {
		m, err := parseLength(v)
		if err != nil {
			return 0, err
		}
		if n >= 0 && m != n {
			return 0, fmt.Errorf("Content-Length fields disagree: %d and %d", n, m)
		}
		n = m
	}
	return max(n, 0), nil
}

// parseLength reads a Content-Length value: decimal digits only.
func parseLength(v string) (int64, error) {
	if v == "" || len(v) > 18 {
		return 0, fmt.Errorf("Content-Length %q is not a length", truncate([]byte(v)))
	}
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, fmt.Errorf("Content-Length %q is not a length", truncate([]byte(v)))
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// readBody reads n bytes of body into r.Body. The buffer grows with what
// arrives, so a Content-Length alone reserves nothing.
func readBody(br *bufio.Reader, r *Request, n int64) error {
	if n == 0 {
		return nil
	}
	var b bytes.Buffer
	got, err := b.ReadFrom(io.LimitReader(br, n))
	if err == nil && got < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	r.Body = b.Bytes()
	return nil
}

// WriteRequest writes r to w as HTTP/1.1: the request line, Host,
// r.Header, Content-Length (when r has a body, and always for POST, PUT
// and PATCH), Connection: close if r.Close, then the body. It returns an
// error for a method that is not a token or a target that cannot stand on
// a request line, or w's error, wrapped.
func WriteRequest(w io.Writer, r *Request) error {
	if !validToken(r.Method) {
		return fmt.Errorf("writing the request: method %q is not a token", r.Method)
	}
	if !validTarget(r.Target) {
		return fmt.Errorf("writing the request: target %q cannot stand on a request line", r.Target)
	}
	if !validValue(r.Host) {
		return fmt.Errorf("writing the request: host %q has control characters", r.Host)
	}
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(r.Target)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.Host)
	b.WriteString("\r\n")
	r.Header.write(&b, "Host", "Content-Length", "Transfer-Encoding", "Connection")
	switch r.Method {
	case "POST", "PUT", "PATCH":
		writeLength(&b, len(r.Body))
	default:
		if len(r.Body) > 0 {
			writeLength(&b, len(r.Body))
		}
	}
	if r.Close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	bufs := net.Buffers{[]byte(b.String()), r.Body}
	if _, err := bufs.WriteTo(w); err != nil {
		return fmt.Errorf("writing the request: %w", err)
	}
	return nil
}

func writeLength(b *strings.Builder, n int) {
	b.WriteString("Content-Length: ")
	b.WriteString(strconv.Itoa(n))
	b.WriteString("\r\n")
}
