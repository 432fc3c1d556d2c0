package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"slices"
	"testing"
)

// The fuzz targets start from the inputs in testdata/fuzz/<target> and
// the seeds added here. `go test` runs just those; `go test
// -fuzz=FuzzReadRequest ./internal/http1` explores from them.

const (
	fuzzMaxHeader = 1 << 10
	fuzzMaxBody   = 1 << 10
)

// FuzzReadRequest: ReadRequest never panics, answers a refusal with a
// status it documents, returns only requests that obey its rules, and a
// request it read, written again by WriteRequest, reads back the same.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET /v1/list HTTP/1.1\r\nHost: keel\r\nUser-Agent: keel\r\n\r\n",
		"POST /v1/stop HTTP/1.1\r\nHost: keel\r\nContent-Length: 17\r\n\r\n{\"target\":\"web\"}",
		"GET / HTTP/1.0\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		r, err := ReadRequest(br, fuzzMaxHeader, fuzzMaxBody)
		if err != nil {
			var re *RequestError
			if errors.As(err, &re) {
				switch re.Status {
				case 400, 413, 417, 431, 501, 505:
				default:
					t.Fatalf("refused with %d: %v", re.Status, re)
				}
				if re.Msg == "" || bytes.ContainsAny([]byte(re.Msg), "\r\n") {
					t.Fatalf("refusal message %q", re.Msg)
				}
			}
			return
		}
		if !validToken(r.Method) || !validTarget(r.Target) || r.URL == nil || len(r.Body) > fuzzMaxBody {
			t.Fatalf("read %+v", r)
		}
		if r.Proto != "HTTP/1.1" && r.Proto != "HTTP/1.0" {
			t.Fatalf("version %q", r.Proto)
		}
		for k, vs := range r.Header {
			if !validToken(k) || CanonicalKey(k) != k {
				t.Fatalf("field name %q", k)
			}
			for _, v := range vs {
				if !validValue(v) {
					t.Fatalf("field %s value %q", k, v)
				}
			}
		}

		// Written again (HTTP/1.1 with its own framing fields), it reads
		// back the same.
		again := *r
		again.Header = maps.Clone(r.Header)
		again.Header.Del("Expect") // an HTTP/1.0 request's is ignored; HTTP/1.1's is not
		var buf bytes.Buffer
		if err := WriteRequest(&buf, &again); err != nil {
			t.Fatalf("writing %+v: %v", r, err)
		}
		back, err := ReadRequest(bufio.NewReader(&buf), fuzzMaxHeader*2, fuzzMaxBody)
		if err != nil {
			t.Fatalf("reading back %q: %v", buf.Bytes(), err)
		}
		framing := []string{"Content-Length", "Connection", "Transfer-Encoding", "Expect"}
		for _, h := range []Header{r.Header, back.Header} {
			for _, k := range framing {
				delete(h, k)
			}
		}
		if back.Method != r.Method || back.Target != r.Target || back.Host != r.Host || !bytes.Equal(back.Body, r.Body) ||
			!maps.EqualFunc(back.Header, r.Header, slices.Equal) {
			t.Fatalf("read %+v\nwrote %q\nread back %+v", r, buf.Bytes(), back)
		}
	})
}

// FuzzReadResponse: ReadResponse and its Body never panic, and a body
// read to its end is no longer than the input.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.0 500 Internal Server Error\r\n\r\nuntil the end",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		resp, err := ReadResponse(bufio.NewReader(bytes.NewReader(in)), method)
		if err != nil {
			return
		}
		if resp.StatusCode < 200 || resp.StatusCode > 999 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		b, _ := io.ReadAll(resp.Body)
		if len(b) > len(in) {
			t.Fatalf("a body of %d bytes from %d", len(b), len(in))
		}
	})
}
