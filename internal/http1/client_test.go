package http1_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/http1"
)

// The peer in these tests is net/http's server: what keel's probes and
// webhooks talk to in the world.

func TestClientDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-Seen", r.Method+" "+r.Host+" "+r.URL.RequestURI()+" "+r.Header.Get("User-Agent")+" "+r.Header.Get("Content-Type")+" "+r.Header.Get("Authorization"))
			w.Write(body)
		case "/moved":
			http.Redirect(w, r, "/echo", http.StatusFound)
		case "/chunked":
			for _, s := range []string{"one ", "two ", "three"} {
				io.WriteString(w, s)
				w.(http.Flusher).Flush()
			}
		case "/big":
			w.Write([]byte(strings.Repeat("b", 100)))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	var c http1.Client

	h := http1.Header{"User-Agent": {"keel-test"}, "content-type": {"application/json"}}
	resp, err := c.Do(ctx, "POST", srv.URL+"/echo?a=b", h, []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	host := strings.TrimPrefix(srv.URL, "http://")
	if resp.StatusCode != 200 || string(body) != `{"x":1}` || resp.Header.Get("X-Seen") != "POST "+host+" /echo?a=b keel-test application/json" {
		t.Fatalf("POST: %s %q seen %q", resp.Status, body, resp.Header.Get("X-Seen"))
	}

	resp, err = c.Do(ctx, "GET", "http://user:pw@"+host+"/echo", nil, nil)
	if err != nil || resp.Header.Get("X-Seen") != "GET "+host+" /echo   Basic dXNlcjpwdw==" {
		t.Fatalf("GET with user info: %v seen %q", err, resp.Header.Get("X-Seen"))
	}

	resp, err = c.Do(ctx, "GET", srv.URL+"/moved", nil, nil)
	if err != nil || resp.StatusCode != 302 || resp.Status != "302 Found" {
		t.Fatalf("a redirect: %+v %v, want the 302 itself", resp, err)
	}

	resp, err = c.Do(ctx, "GET", srv.URL+"/chunked", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "one two three" || resp.ContentLength != -1 {
		t.Fatalf("a chunked answer: %q, length %d", body, resp.ContentLength)
	}

	small := http1.Client{MaxBody: 10}
	resp, err = small.Do(ctx, "GET", srv.URL+"/big", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "bbbbbbbbbb" {
		t.Fatalf("MaxBody 10: body %q", body)
	}
}

func TestClientTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.ServerName)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c := http1.Client{TLSConfig: &tls.Config{RootCAs: roots}}
	resp, err := c.Do(context.Background(), "GET", srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %s", resp.Status)
	}
	// The certificate is checked against the URL's host, sent as SNI.
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	c.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	resp, err = c.Do(context.Background(), "GET", "https://example.com:"+port+"/", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "example.com" {
		t.Fatalf("SNI %q, want example.com", body)
	}
	_, err = c.Do(context.Background(), "GET", "https://keel.invalid:"+port+"/", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "TLS handshake with keel.invalid:"+port) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a host the certificate is not for: %v", err)
	}
}

func TestClientErrors(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	var c http1.Client
	ctx := context.Background()
	if _, err := c.Do(ctx, "GET", gone.URL, nil, nil); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a closed port: %v, want ECONNREFUSED", err)
	}
	for _, u := range []string{"ftp://127.0.0.1/", "http://", "127.0.0.1:80", "http://%zz"} {
		if _, err := c.Do(ctx, "GET", u, nil, nil); err == nil {
			t.Errorf("%q accepted", u)
		}
	}

	// A server that never answers: ctx's deadline ends the wait, and the
	// error says it timed out.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err := c.Do(tctx, "GET", slow.URL, nil, nil)
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("past the deadline: %v, want a timeout", err)
	}

	// A server that answers garbage.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
		c.Close()
	}()
	if _, err := c.Do(ctx, "GET", "http://"+ln.Addr().String()+"/", nil, nil); err == nil || !strings.Contains(err.Error(), "reading the answer: malformed status line") {
		t.Errorf("garbage: %v", err)
	}
}
