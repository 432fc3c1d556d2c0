package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// The statuses keel answers or looks at.
const (
	StatusContinue                    = 100
	StatusSwitchingProtocols          = 101
	StatusOK                          = 200
	StatusNoContent                   = 204
	StatusNotModified                 = 304
	StatusBadRequest                  = 400
	StatusUnauthorized                = 401
	StatusForbidden                   = 403
	StatusNotFound                    = 404
	StatusMethodNotAllowed            = 405
	StatusRequestEntityTooLarge       = 413
	StatusExpectationFailed           = 417
	StatusRequestHeaderFieldsTooLarge = 431
	StatusInternalServerError         = 500
	StatusNotImplemented              = 501
	StatusServiceUnavailable          = 503
	StatusHTTPVersionNotSupported     = 505
)

// StatusText is the reason phrase of the statuses above, and "" for
// others.
func StatusText(code int) string {
	switch code {
	case StatusContinue:
		return "Continue"
	case StatusSwitchingProtocols:
		return "Switching Protocols"
	case StatusOK:
		return "OK"
	case StatusNoContent:
		return "No Content"
	case StatusNotModified:
		return "Not Modified"
	case StatusBadRequest:
		return "Bad Request"
	case StatusUnauthorized:
		return "Unauthorized"
	case StatusForbidden:
		return "Forbidden"
	case StatusNotFound:
		return "Not Found"
	case StatusMethodNotAllowed:
		return "Method Not Allowed"
	case StatusRequestEntityTooLarge:
		return "Request Entity Too Large"
	case StatusExpectationFailed:
		return "Expectation Failed"
	case StatusRequestHeaderFieldsTooLarge:
		return "Request Header Fields Too Large"
	case StatusInternalServerError:
		return "Internal Server Error"
	case StatusNotImplemented:
		return "Not Implemented"
	case StatusServiceUnavailable:
		return "Service Unavailable"
	case StatusHTTPVersionNotSupported:
		return "HTTP Version Not Supported"
	}
	return ""
}

// bodyless reports whether a response with this status never has a body.
func bodyless(code int) bool {
	return code/100 == 1 || code == StatusNoContent || code == StatusNotModified
}

// Response is an answer as ReadResponse read it.
type Response struct {
	Proto      string // "HTTP/1.1" or "HTTP/1.0"
	StatusCode int    // 200
	Status     string // "200 OK": the code and the reason phrase as sent
	Header     Header
	// ContentLength is the body's length, or -1 when it is chunked or
	// runs to the end of the connection.
	ContentLength int64
	// Body reads the body as framed, and returns io.EOF at its end (or
	// io.ErrUnexpectedEOF if the connection ends first). It reads from
	// the reader ReadResponse was given.
	Body io.Reader
	// Close: the server will close the connection after this answer.
	Close bool
}

// ReadResponse reads the answer to a request of method from br: its status
// line and header fields (together at most DefaultMaxHeaderBytes, 1xx
// interim answers included, which are skipped) and a Body that reads the
// body as framed by Transfer-Encoding: chunked, Content-Length or the end
// of the connection. An answer to HEAD, and a 1xx, 204 or 304 one, has an
// empty body. It returns an error, wrapped, for a malformed or oversized
// head, a 101 (keel never asks to switch protocols) and br's errors
// (io.ErrUnexpectedEOF if it ends within the head).
func ReadResponse(br *bufio.Reader, method string) (*Response, error) {
	budget := DefaultMaxHeaderBytes
	for {
		resp, err := readResponseHead(br, &budget)
		if err != nil {
			if errors.Is(err, errHeaderTooLarge) {
				err = fmt.Errorf("status line and header over %d bytes", DefaultMaxHeaderBytes)
			}
			return nil, fmt.Errorf("reading the answer: %w", err)
		}
		if resp.StatusCode == StatusSwitchingProtocols {
			return nil, fmt.Errorf("reading the answer: unexpected %s", resp.Status)
		}
		if resp.StatusCode/100 == 1 {
			continue // an interim answer: the final one follows
		}
		if err := resp.frame(br, method); err != nil {
			return nil, fmt.Errorf("reading the answer: %w", err)
		}
		return resp, nil
	}
}

func readResponseHead(br *bufio.Reader, budget *int) (*Response, error) {
	line, err := readLine(br, budget)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	s := string(line)
	proto, rest, _ := strings.Cut(s, " ")
	code, reason, _ := strings.Cut(rest, " ")
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return nil, fmt.Errorf("malformed status line %q", truncate(line))
	}
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return nil, fmt.Errorf("malformed status code in %q", truncate(line))
	}
	h, err := readHeader(br, budget)
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(code)
	return &Response{Proto: proto, StatusCode: n, Status: strings.TrimSpace(code + " " + reason), Header: h}, nil
}

// frame sets the response's Body, ContentLength and Close by RFC 9112 6.3.
func (resp *Response) frame(br *bufio.Reader, method string) error {
	h := resp.Header
	if resp.Proto == "HTTP/1.0" {
		resp.Close = !h.has("Connection", "keep-alive")
	} else {
		resp.Close = h.has("Connection", "close")
	}
	switch te := h["Transfer-Encoding"]; {
	case method == "HEAD" || bodyless(resp.StatusCode):
		resp.ContentLength, resp.Body = 0, eofReader{}
	case len(te) > 0:
		resp.ContentLength = -1
		codings := strings.Split(te[len(te)-1], ",")
		if strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			resp.Body = &chunkedReader{br: br}
		} else {
			resp.Body, resp.Close = br, true
		}
	case len(h["Content-Length"]) > 0:
		n, err := contentLength(h["Content-Length"])
		if err != nil {
			return err
		}
		resp.ContentLength, resp.Body = n, &lengthReader{r: br, n: n}
	default:
		resp.ContentLength, resp.Body, resp.Close = -1, br, true
	}
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// lengthReader reads n bytes, and fails if r ends before.
type lengthReader struct {
	r io.Reader
	n int64
}

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.r.Read(p)
	l.n -= int64(k)
	if err == io.EOF && l.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil
	}
	return k, err
}

// maxChunkLine bounds a chunk-size line, extensions included, and the
// trailer fields together.
const maxChunkLine = 4 << 10

// chunkedReader reads a chunked body (RFC 9112 7.1): hex size lines, each
// followed by that many bytes and a CRLF, up to a zero size and trailer
// fields, which are read and dropped.
type chunkedReader struct {
	br      *bufio.Reader
	n       int64 // bytes left in the current chunk
	started bool  // a chunk was read: a CRLF ends it
	err     error // sticky
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.n == 0 {
		if c.err = c.next(); c.err != nil {
			return 0, c.err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	k, err := c.br.Read(p)
	c.n -= int64(k)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		c.err = fmt.Errorf("reading a chunk: %w", err)
	}
	return k, c.err
}

// next reads up to the next chunk's data, or through the end of the body
// (and returns io.EOF).
func (c *chunkedReader) next() error {
	budget := maxChunkLine
	if c.started {
		line, err := readLine(c.br, &budget)
		if err != nil {
			return chunkErr(err)
		}
		if len(line) != 0 {
			return errors.New("reading a chunk: no CRLF after its data")
		}
	}
	c.started = true
	budget = maxChunkLine
	line, err := readLine(c.br, &budget)
	if err != nil {
		return chunkErr(err)
	}
	size, _, _ := bytes.Cut(line, []byte(";"))
	size = bytes.TrimRight(size, " \t")
	if len(size) == 0 || len(size) > 15 {
		return fmt.Errorf("reading a chunk: bad size line %q", truncate(line))
	}
	var n int64
	for _, d := range size {
		switch {
		case '0' <= d && d <= '9':
			n = n<<4 | int64(d-'0')
		case 'a' <= d && d <= 'f':
			n = n<<4 | int64(d-'a'+10)
		case 'A' <= d && d <= 'F':
			n = n<<4 | int64(d-'A'+10)
		default:
			return fmt.Errorf("reading a chunk: bad size line %q", truncate(line))
		}
	}
	if n > 0 {
		c.n = n
		return nil
	}
	budget = maxChunkLine
	if _, err := readHeader(c.br, &budget); err != nil {
		return fmt.Errorf("reading the trailer: %w", chunkErr(err))
	}
	return io.EOF
}

func chunkErr(err error) error {
	switch {
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	case errors.Is(err, errHeaderTooLarge):
		err = fmt.Errorf("chunk line over %d bytes", maxChunkLine)
	}
	return fmt.Errorf("reading a chunk: %w", err)
}

// ResponseWriter collects a handler's answer: status, header fields and
// body. The server writes it whole, with a Content-Length, once the
// handler returns — fine for keel's answers, which are small. It is not
// safe for concurrent use.
type ResponseWriter struct {
	header Header
	status int
	body   bytes.Buffer
	stream StreamFunc
}

// A StreamFunc writes a streamed answer's body to out until it is done or
// ctx is (the client hung up, or the server is shutting down). Each Write
// goes to the connection at once: a StreamFunc buffers what belongs
// together itself.
type StreamFunc func(ctx context.Context, out io.Writer) error

// Stream makes the answer a stream, for Server-Sent Events and the like:
// once the handler returns, the server writes the status and header fields
// without a Content-Length, calls f, and closes the connection when f
// returns; the body is what f writes (anything Written before is sent
// first). A HEAD request gets the header fields alone.
func (w *ResponseWriter) Stream(f StreamFunc) { w.stream = f }

// Header is the answer's header fields, to change before the handler
// returns. The server sets Content-Length itself, and Connection: close
// when it will close the connection; a handler that sets Connection:
// close has the connection closed after its answer.
func (w *ResponseWriter) Header() Header {
	if w.header == nil {
		w.header = Header{}
	}
	return w.header
}

// WriteHeader sets the status; only the first call counts. Unset, it is
// 200.
func (w *ResponseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

// Grow makes room for n more bytes of body, so that a large answer
// written in pieces is not copied as its buffer grows.
func (w *ResponseWriter) Grow(n int) { w.body.Grow(n) }

// Status is the status set so far: 0 before WriteHeader or Write.
func (w *ResponseWriter) Status() int { return w.status }

// Write appends p to the body. It never fails.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(StatusOK)
	return w.body.Write(p)
}

// Reset forgets everything written so far, status and header included,
// so that a handler can answer afresh (after a panic, say).
func (w *ResponseWriter) Reset() {
	w.header, w.status, w.stream = nil, 0, nil
	w.body.Reset()
}

// encode is the answer as it goes on the wire: HTTP/1.1, the status, the
// handler's fields, Content-Length and, when close, Connection: close (or
// Connection: keep-alive when keepAlive10, for an HTTP/1.0 client); then
// the body, unless the request was a HEAD. The body is not copied.
func (w *ResponseWriter) encode(head, close, keepAlive10 bool) net.Buffers {
	status := w.status
	if status < 100 || status > 999 {
		status = StatusOK
	}
	var b strings.Builder
	b.Grow(256)
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteByte(' ')
	b.WriteString(StatusText(status))
	b.WriteString("\r\n")
	w.header.write(&b, "Content-Length", "Transfer-Encoding", "Connection")
	if !bodyless(status) && w.stream == nil {
		writeLength(&b, w.body.Len())
	}
	switch {
	case close:
		b.WriteString("Connection: close\r\n")
	case keepAlive10:
		b.WriteString("Connection: keep-alive\r\n")
	}
	b.WriteString("\r\n")
	out := net.Buffers{[]byte(b.String())}
	if !head && !bodyless(status) && w.body.Len() > 0 {
		out = append(out, w.body.Bytes())
	}
	return out
}
