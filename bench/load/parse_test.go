package load

import (
	"errors"
	"io"
	"testing"
)

// feedAll gives the parser raw in pieces of size step, as reads would,
// keeping unused bytes for the next read, and ends with EOF if eof.
func feedAll(p *response, raw string, step int, eof bool) (done bool, used int, err error) {
	buf := []byte{}
	for i := 0; i < len(raw) && !done; {
		end := min(i+step, len(raw))
		buf = append(buf, raw[i:end]...)
		i = end
		var n int
		n, done, err = p.feed(buf)
		used += n
		buf = buf[n:]
		if err != nil {
			return false, used, err
		}
	}
	if !done && eof {
		done, err = p.eof(len(raw) > 0)
	}
	return done, used, err
}

func TestParseResponses(t *testing.T) {
	for _, c := range []struct {
		name     string
		raw      string
		eof      bool
		status   int
		close    bool
		id       string
		fromBody bool
		used     int // bytes of raw the response is; 0: all
	}{
		{name: "length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Keel-Instance: 3\r\n\r\nhello", status: 200, id: "3"},
		{name: "next response waits", raw: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", status: 200, used: 40},
		{name: "chunked", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n i-\r\n4\r\n7 \r\n\r\n0\r\nTrailer: 1\r\n\r\n", status: 200, id: "i-7", fromBody: true},
		{name: "http/1.0 closes", raw: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", status: 200, close: true},
		{name: "http/1.0 keep-alive", raw: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", status: 200},
		{name: "connection close", raw: "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope", status: 503, close: true},
		{name: "until close", raw: "HTTP/1.1 200 OK\r\n\r\nbody until the end", eof: true, status: 200, close: true, id: "body until the end", fromBody: true},
		{name: "informational first", raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-Keel-Instance: a\r\n\r\n", status: 204, id: "a"},
		{name: "header wins over body", raw: "HTTP/1.1 200 OK\r\nX-Keel-Instance: h\r\nContent-Length: 1\r\n\r\nb", status: 200, id: "h", fromBody: true},
	} {
		for _, step := range []int{1, 7, 1 << 20} {
			p := &response{header: []byte("x-keel-instance"), fromBody: c.fromBody}
			p.reset()
			done, used, err := feedAll(p, c.raw, step, c.eof)
			if err != nil || !done {
				t.Errorf("%s, %d bytes a read: done %v, err %v", c.name, step, done, err)
				continue
			}
			want := c.used
			if want == 0 {
				want = len(c.raw)
			}
			if !c.eof && used != want {
				t.Errorf("%s, %d bytes a read: used %d bytes, want %d", c.name, step, used, want)
			}
			if p.status != c.status || p.close != c.close || p.instance() != c.id {
				t.Errorf("%s, %d bytes a read: status %d close %v id %q", c.name, step, p.status, p.close, p.instance())
			}
		}
	}
}

func TestParseFailures(t *testing.T) {
	for _, c := range []struct {
		name string
		raw  string
		eof  bool
		want error
	}{
		{name: "not http", raw: "SMTP ready\r\n", want: errMalformed},
		{name: "bad status", raw: "HTTP/1.1 2x0 OK\r\n\r\n", want: errMalformed},
		{name: "bad length", raw: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", want: errMalformed},
		{name: "bad chunk", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", want: errMalformed},
		{name: "no crlf after chunk", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab", want: errMalformed},
		{name: "cut body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", eof: true, want: io.ErrUnexpectedEOF},
		{name: "nothing", raw: "", eof: true, want: io.EOF},
	} {
		p := &response{}
		p.reset()
		_, _, err := feedAll(p, c.raw, 3, c.eof)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 3)
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1)
	f.Fuzz(func(t *testing.T, raw string, step int) {
		if step < 1 || step > 1<<16 {
			return
		}
		p := &response{header: []byte("x-keel-instance"), fromBody: true}
		p.reset()
		_, used, _ := feedAll(p, raw, step, true)
		if used > len(raw) {
			t.Fatalf("used %d of %d bytes", used, len(raw))
		}
	})
}
