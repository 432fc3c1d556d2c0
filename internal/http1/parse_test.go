package http1

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func readRequest(s string) (*Request, error) {
	return ReadRequest(bufio.NewReader(strings.NewReader(s)), 256, 64)
}

func TestReadRequest(t *testing.T) {
	r, err := readRequest("\r\nPOST /v1/describe?target=web%3A1 HTTP/1.1\r\nhost: keel\r\ncontent-TYPE:  application/json \r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhello")
	if err != nil {
		t.Fatal(err)
	}
	want := Header{"Content-Type": {"application/json"}, "X-A": {"1", "2"}, "Content-Length": {"5"}}
	if r.Method != "POST" || r.Target != "/v1/describe?target=web%3A1" || r.Proto != "HTTP/1.1" || r.Host != "keel" ||
		!reflect.DeepEqual(r.Header, want) || string(r.Body) != "hello" || r.Close {
		t.Fatalf("read %+v", r)
	}
	if r.URL.Path != "/v1/describe" || r.URL.Query().Get("target") != "web:1" {
		t.Fatalf("URL %+v", r.URL)
	}

	for _, tc := range []struct {
		req   string
		close bool
	}{
		{"GET / HTTP/1.1\r\nHost: k\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: k\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", true},
		{"GET / HTTP/1.0\r\n\r\n", true},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false},
	} {
		r, err := readRequest(tc.req)
		if err != nil || r.Close != tc.close {
			t.Errorf("%q: close %v (%v), want %v", tc.req, r != nil && r.Close, err, tc.close)
		}
	}
}

func TestReadRequestRefuses(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		req    string
		status int
		msg    string
	}{
		{"GET /\r\n\r\n", 400, "malformed request line"},
		{"GET  / HTTP/1.1\r\n\r\n", 400, "malformed request target"},
		{"GET / HTTP/1.1 extra\r\n\r\n", 400, "malformed version"},
		{"G(T / HTTP/1.1\r\nHost: k\r\n\r\n", 400, "is not a token"},
		{"GET /\x01 HTTP/1.1\r\nHost: k\r\n\r\n", 400, "malformed request target"},
		{"GET %zz HTTP/1.1\r\nHost: k\r\n\r\n", 400, "malformed request target"},
		{"GET / HTTP/2.0\r\nHost: k\r\n\r\n", 505, "HTTP/2.0 is not supported"},
		{"GET / FTP/1.1\r\nHost: k\r\n\r\n", 400, "malformed version"},
		{"GET / HTTP/1.1\r\n\r\n", 400, "no Host field"},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "2 Host fields"},
		{"GET / HTTP/1.1\r\nHost: k\r\nno colon\r\n\r\n", 400, "no colon"},
		{"GET / HTTP/1.1\r\nHost : k\r\n\r\n", 400, "is not a token"},
		{"GET / HTTP/1.1\r\nHost: k\r\nX: a\r\n b\r\n\r\n", 400, "folded"},
		{"GET / HTTP/1.1\r\nHost: k\r\nX: a\x00b\r\n\r\n", 400, "control character"},
		{"GET /" + long + " HTTP/1.1\r\nHost: k\r\n\r\n", 431, "over 256 bytes"},
		{"GET / HTTP/1.1\r\nHost: k\r\nX: " + long + "\r\n\r\n", 431, "over 256 bytes"},
		{"POST / HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, `Transfer-Encoding "chunked" is not supported`},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: abc\r\n\r\n", 400, "is not a length"},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: -1\r\n\r\n", 400, "is not a length"},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: +1\r\n\r\n", 400, "is not a length"},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: 1, 1\r\n\r\n", 400, "is not a length"},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "disagree"},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: 65\r\n\r\n", 413, "65 bytes is over the 64 allowed"},
		{"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "is not a length"},
		{"POST / HTTP/1.1\r\nHost: k\r\nExpect: magic\r\n\r\n", 417, `Expect "magic"`},
	} {
		_, err := readRequest(tc.req)
		var re *RequestError
		if !errors.As(err, &re) || re.Status != tc.status || !strings.Contains(re.Msg, tc.msg) {
			t.Errorf("%.60q: %v, want %d with %q", tc.req, err, tc.status, tc.msg)
			continue
		}
		if strings.ContainsAny(re.Msg, "\r\n") {
			t.Errorf("%.60q: message %q spans lines", tc.req, re.Msg)
		}
	}
}

func TestReadRequestEnds(t *testing.T) {
	if _, err := readRequest(""); err != io.EOF {
		t.Errorf("nothing: %v, want io.EOF", err)
	}
	for _, s := range []string{
		"GET / HT",
		"GET / HTTP/1.1\r\nHost: k\r\n",
		"POST / HTTP/1.1\r\nHost: k\r\nContent-Length: 5\r\n\r\nhel",
	} {
		if _, err := readRequest(s); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: %v, want io.ErrUnexpectedEOF", s, err)
		}
	}
	// Within the budget exactly: the request line and fields count, CRLFs
	// included.
	req := "GET / HTTP/1.1\r\nHost: k\r\nX: " + strings.Repeat("y", 256-len("GET / HTTP/1.1\r\nHost: k\r\nX: \r\n\r\n")) + "\r\n\r\n"
	if _, err := readRequest(req); err != nil {
		t.Errorf("a head of exactly the limit: %v", err)
	}
	if _, err := readRequest(req[:len(req)-4] + "y\r\n\r\n"); err == nil {
		t.Error("a head one byte over the limit was read")
	}
	if r, err := readRequest("POST / HTTP/1.1\r\nHost: k\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok"); err != nil || !r.expectContinue {
		t.Errorf("Expect: 100-continue: %+v, %v", r, err)
	}
}

func TestWriteRequest(t *testing.T) {
	var b strings.Builder
	err := WriteRequest(&b, &Request{
		Method: "POST", Target: "/v1/start", Host: "keel",
		Header: Header{"Content-Type": {"application/json"}, "X-Evil": {"a\r\nInjected: 1 "}, "Content-Length": {"99"}, "Bad Name": {"x"}},
		Body:   []byte(`{}`), Close: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "POST /v1/start HTTP/1.1\r\nHost: keel\r\nContent-Type: application/json\r\nX-Evil: a  Injected: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
	if b.String() != want {
		t.Fatalf("wrote\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	WriteRequest(&b, &Request{Method: "POST", Target: "/kill", Host: "keel"})
	if !strings.Contains(b.String(), "Content-Length: 0\r\n") {
		t.Errorf("a POST without a body: %q, want Content-Length: 0", b.String())
	}
	b.Reset()
	WriteRequest(&b, &Request{Method: "GET", Target: "/list", Host: "keel"})
	if b.String() != "GET /list HTTP/1.1\r\nHost: keel\r\n\r\n" {
		t.Errorf("a GET: %q", b.String())
	}
	for _, r := range []*Request{
		{Method: "GE T", Target: "/"},
		{Method: "GET", Target: "/a b"},
		{Method: "GET", Target: ""},
		{Method: "GET", Target: "/", Host: "a\r\nb"},
	} {
		if err := WriteRequest(io.Discard, r); err == nil {
			t.Errorf("%+v written", r)
		}
	}
}

func readResponse(s, method string) (*Response, string, error) {
	resp, err := ReadResponse(bufio.NewReader(strings.NewReader(s)), method)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, resp, method string
		status             string
		body               string
		length             int64
		close              bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", "GET", "200 OK", "hello", 5, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7 \r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT", "GET", "200 OK", "hello, world", -1, false},
		{"chunked wins over a length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", "GET", "200 OK", "0123456789", -1, false},
		{"until EOF", "HTTP/1.1 200 OK\r\n\r\nall of\r\nthis", "GET", "200 OK", "all of\r\nthis", -1, true},
		{"unknown coding: until EOF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz", "GET", "200 OK", "zzz", -1, true},
		{"interim answers", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", "POST", "503 Service Unavailable", "busy", 4, false},
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", "HEAD", "200 OK", "", 0, false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", "GET", "204 No Content", "", 0, false},
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", "GET", "404", "", 0, false},
		{"asked to close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", "200 OK", "", 0, true},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", "200 OK", "ok", 2, true},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "GET", "200 OK", "ok", 2, false},
	} {
		resp, body, err := readResponse(tc.resp, tc.method)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if resp.Status != tc.status || body != tc.body || resp.ContentLength != tc.length || resp.Close != tc.close {
			t.Errorf("%s: %q %q length %d close %v, want %q %q %d %v", tc.name, resp.Status, body, resp.ContentLength, resp.Close, tc.status, tc.body, tc.length, tc.close)
		}
	}
}

func TestReadResponseFails(t *testing.T) {
	big := strings.Repeat("x", DefaultMaxHeaderBytes)
	for _, tc := range []struct{ name, resp, want string }{
		{"empty", "", "unexpected EOF"},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", "malformed status line"},
		{"bad code", "HTTP/1.1 2000 OK\r\n\r\n", "malformed status code"},
		{"letters", "HTTP/1.1 abc OK\r\n\r\n", "malformed status code"},
		{"header cut", "HTTP/1.1 200 OK\r\nA: b\r\n", "unexpected EOF"},
		{"huge header", "HTTP/1.1 200 OK\r\nA: " + big + "\r\n\r\n", "header over"},
		{"endless interim answers", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", DefaultMaxHeaderBytes/20), "header over"},
		{"switching", "HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101"},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "not a length"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "unexpected EOF"},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad size line"},
		{"chunk size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", "bad size line"},
		{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", "no CRLF after its data"},
		{"chunks cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "unexpected EOF"},
		{"no last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "unexpected EOF"},
		{"huge chunk line", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + big + "\r\nhello\r\n0\r\n\r\n", "chunk line over"},
	} {
		_, _, err := readResponse(tc.resp, "GET")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestCanonicalKey(t *testing.T) {
	for in, want := range map[string]string{
		"content-length": "Content-Length",
		"CONTENT-TYPE":   "Content-Type",
		"x-a-b":          "X-A-B",
		"Host":           "Host",
		"bad key":        "bad key",
		"":               "",
	} {
		if got := CanonicalKey(in); got != want {
			t.Errorf("CanonicalKey(%q) = %q, want %q", in, got, want)
		}
	}
	h := Header{}
	h.Add("x-y", "1")
	h.Set("X-Y", "2")
	h.Add("x-Y", "3")
	if h.Get("X-y") != "2" || len(h["X-Y"]) != 2 {
		t.Fatalf("header %v", h)
	}
	h.Del("x-y")
	if len(h) != 0 {
		t.Fatalf("header %v after Del", h)
	}
}
