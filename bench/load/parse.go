package load

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// errMalformed is a response that is not HTTP/1.x; it counts as Other.
var errMalformed = errors.New("malformed HTTP response")

// maxHead bounds a response's status line and headers, and a chunk-size
// or trailer line.
const maxHead = 64 << 10

// bodyKind says how a response's body ends.
type bodyKind int

const (
	bodyNone       bodyKind = iota // 1xx, 204, 304
	bodyLength                     // Content-Length bytes
	bodyChunked                    // chunked transfer coding
	bodyUntilClose                 // everything until the server closes
)

// chunked transfer coding, step by step.
type chunkStep int

const (
	chunkSize    chunkStep = iota // a size line
	chunkData                     // remaining bytes of data
	chunkEnd                      // the CRLF after the data
	chunkTrailer                  // trailer lines until an empty one
)

// response reads one HTTP/1.x response incrementally from whatever bytes
// have arrived, without copying the body: the load client only needs the
// status, whether the connection stays open, and the instance that
// answered. It is reset for each request.
type response struct {
	header   []byte // the instance header's name, lower case
	fromBody bool   // take the instance from the body if the header is absent

	headDone   bool
	status     int
	statusLine string // kept for non-2xx answers, for the error message
	close      bool
	body       bodyKind
	remaining  int64
	chunk      chunkStep
	id         string
	lastID     string // the previous response's id, reused to avoid a copy
	idBody     []byte
}

func (p *response) reset() {
	p.headDone, p.status, p.statusLine, p.close = false, 0, "", false
	p.body, p.remaining, p.chunk = bodyNone, 0, chunkSize
	p.id, p.idBody = "", p.idBody[:0]
}

// instance is the id of the instance that answered, once the response is
// complete.
func (p *response) instance() string {
	if p.id == "" && p.fromBody {
		return strings.TrimSpace(string(p.idBody))
	}
	return p.id
}

// feed consumes what it can of b. It reports how many bytes it used and
// whether the response is complete; with done false and n < len(b), the
// rest of b is an incomplete line that needs more bytes behind it.
func (p *response) feed(b []byte) (n int, done bool, err error) {
	for {
		if !p.headDone {
			used, err := p.head(b[n:])
			if err != nil || used == 0 {
				return n, false, err
			}
			n += used
			if !p.headDone { // an informational 1xx answer: the real one follows
				continue
			}
		}
		switch p.body {
		case bodyNone:
			return n, true, nil
		case bodyLength:
			n += p.consume(b[n:])
			return n, p.remaining == 0, nil
		case bodyUntilClose:
			p.keepBody(b[n:])
			return len(b), false, nil
		case bodyChunked:
			used, done, err := p.chunked(b[n:])
			return n + used, done, err
		}
	}
}

// eof is the server closing the connection after feed saw everything it
// sent: the end of a body that runs until close, or a cut response.
func (p *response) eof(received bool) (done bool, err error) {
	if p.headDone && p.body == bodyUntilClose {
		return true, nil
	}
	if !received {
		return false, io.EOF
	}
	return false, io.ErrUnexpectedEOF
}

// consume takes up to p.remaining bytes of body from b and says how many.
func (p *response) consume(b []byte) int {
	take := int(min(int64(len(b)), p.remaining))
	p.keepBody(b[:take])
	p.remaining -= int64(take)
	return take
}

func (p *response) keepBody(b []byte) {
	if p.fromBody && p.id == "" && len(p.idBody) < 64 {
		p.idBody = append(p.idBody, b[:min(len(b), 64-len(p.idBody))]...)
	}
}

var (
	hdrContentLength    = []byte("content-length")
	hdrTransferEncoding = []byte("transfer-encoding")
	hdrConnection       = []byte("connection")
)

// head parses the status line and headers if all of them are in b.
func (p *response) head(b []byte) (int, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) >= maxHead {
			return 0, fmt.Errorf("%w: header longer than %d bytes", errMalformed, maxHead)
		}
		if len(b) >= 5 && !bytes.HasPrefix(b, []byte("HTTP/")) {
			return 0, fmt.Errorf("%w: %q", errMalformed, clip(b))
		}
		return 0, nil
	}
	lines := b[:end]
	line, rest, _ := bytes.Cut(lines, []byte("\r\n"))
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return 0, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
	}
	status := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: status line %q", errMalformed, clip(line))
		}
		status = status*10 + int(c-'0')
	}
	http10 := line[7] == '0'
	keepAlive := false
	length := int64(-1)
	chunked, otherCoding := false, false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return 0, fmt.Errorf("%w: header line %q", errMalformed, clip(line))
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, hdrContentLength):
			n, ok := parseLength(value)
			if !ok {
				return 0, fmt.Errorf("%w: Content-Length %q", errMalformed, clip(value))
			}
			length = n
		case bytes.EqualFold(name, hdrTransferEncoding):
			codings := bytes.Split(value, []byte(","))
			if bytes.EqualFold(bytes.TrimSpace(codings[len(codings)-1]), []byte("chunked")) {
				chunked = true
			} else {
				otherCoding = true
			}
		case bytes.EqualFold(name, hdrConnection):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if bytes.EqualFold(tok, []byte("close")) {
					p.close = true
				} else if bytes.EqualFold(tok, []byte("keep-alive")) {
					keepAlive = true
				}
			}
		case len(p.header) > 0 && bytes.EqualFold(name, p.header):
			if string(value) != p.lastID { // compared without a copy
				p.lastID = string(value)
			}
			p.id = p.lastID
		}
	}
	used := end + 4
	if status >= 100 && status < 200 && status != 101 {
		p.id, p.close = "", false
		return used, nil
	}
	p.headDone, p.status = true, status
	if status < 200 || status > 299 {
		p.statusLine = string(line9(b))
	}
	if http10 && !keepAlive {
		p.close = true
	}
	switch {
	case status < 200 || status == 204 || status == 304:
		p.body = bodyNone
	case chunked:
		p.body = bodyChunked
	case otherCoding || length < 0:
		p.body, p.close = bodyUntilClose, true
	default:
		p.body, p.remaining = bodyLength, length
		if length == 0 {
			p.body = bodyNone
		}
	}
	return used, nil
}

// line9 is the status line after "HTTP/1.x ": "503 Service Unavailable".
func line9(b []byte) []byte {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return line[9:]
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// chunked consumes a chunked body.
func (p *response) chunked(b []byte) (n int, done bool, err error) {
	for n < len(b) {
		switch p.chunk {
		case chunkSize, chunkTrailer:
			i := bytes.IndexByte(b[n:], '\n')
			if i < 0 {
				if len(b)-n >= maxHead {
					return n, false, fmt.Errorf("%w: chunk line longer than %d bytes", errMalformed, maxHead)
				}
				return n, false, nil
			}
			line := bytes.TrimSuffix(b[n:n+i], []byte("\r"))
			n += i + 1
			if p.chunk == chunkTrailer {
				if len(line) == 0 {
					return n, true, nil
				}
				continue
			}
			size, ok := parseHex(line)
			if !ok {
				return n, false, fmt.Errorf("%w: chunk size %q", errMalformed, clip(line))
			}
			if size == 0 {
				p.chunk = chunkTrailer
			} else {
				p.chunk, p.remaining = chunkData, size
			}
		case chunkData:
			n += p.consume(b[n:])
			if p.remaining == 0 {
				p.chunk = chunkEnd
			}
		case chunkEnd:
			switch {
			case b[n] == '\n':
				n++
			case b[n] == '\r' && n+1 < len(b):
				if b[n+1] != '\n' {
					return n, false, fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
				}
				n += 2
			case b[n] == '\r':
				return n, false, nil
			default:
				return n, false, fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
			}
			p.chunk = chunkSize
		}
	}
	return n, false, nil
}

// parseHex reads a chunk size, ignoring chunk extensions.
func parseHex(line []byte) (int64, bool) {
	line, _, _ = bytes.Cut(line, []byte(";"))
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// clip shortens what goes into an error message.
func clip(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}
