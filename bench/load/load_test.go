package load

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != r.OK+r.Failures() {
		t.Fatalf("requests %d != ok %d + failed %d", r.Requests, r.OK, r.Failures())
	}
	return r
}

func wantFailures(t *testing.T, r *Result, want map[Kind]int64) {
	t.Helper()
	for _, k := range Kinds() {
		if got := r.Failed[k.String()]; got != want[k] {
			t.Errorf("%s failures = %d, want %d\n%s", k, got, want[k], r)
		}
	}
}

func TestCountsOKAndInstances(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.Header().Set("X-Keel-Instance", "a")
		} else {
			w.Header().Set("X-Keel-Instance", "b")
		}
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()
	r := run(t, Config{URL: srv.URL + "/x?y=1", Conns: 4, MaxRequests: 1000})
	if r.OK != 1000 || r.Requests != 1000 {
		t.Fatalf("ok %d of %d, want 1000\n%s", r.OK, r.Requests, r)
	}
	wantFailures(t, r, nil)
	if r.Instances["a"] != 500 || r.Instances["b"] != 500 || r.Share("a") != 0.5 {
		t.Fatalf("instances %v", r.Instances)
	}
	if r.Connections != 4 {
		t.Fatalf("%d connections opened, want 4 kept alive", r.Connections)
	}
	if got := r.ConnInstances["a"] + r.ConnInstances["b"]; got != 4 {
		t.Fatalf("connections by first instance %v, want 4 in all", r.ConnInstances)
	}
	if r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max || r.RPS <= 0 {
		t.Fatalf("p50 %v p99 %v max %v rps %v", r.P50, r.P99, r.Max, r.RPS)
	}
	var ticks int64
	for _, tk := range r.PerSecond {
		ticks += tk.OK
	}
	if ticks != 1000 {
		t.Fatalf("per-second ticks add up to %d", ticks)
	}
}

func TestInstanceFromBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "  instance-7\n")
	}))
	defer srv.Close()
	r := run(t, Config{URL: srv.URL, Conns: 2, MaxRequests: 50, InstanceFromBody: true})
	if r.Instances["instance-7"] != 50 {
		t.Fatalf("instances %v", r.Instances)
	}
}

func TestCountsNon2xx(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			http.Error(w, "nope", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	r := run(t, Config{URL: srv.URL, Conns: 1, MaxRequests: 100})
	if r.OK != 75 {
		t.Fatalf("ok %d, want 75", r.OK)
	}
	wantFailures(t, r, map[Kind]int64{Status: 25})
	if !strings.Contains(r.Errors["status"], "503") {
		t.Fatalf("errors %v", r.Errors)
	}
}

func TestConnectionCloseReconnects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "bye")
	}))
	defer srv.Close()
	r := run(t, Config{URL: srv.URL, Conns: 2, MaxRequests: 40})
	if r.OK != 40 || r.Connections != 40 {
		t.Fatalf("ok %d connections %d, want 40 and 40", r.OK, r.Connections)
	}
	wantFailures(t, r, nil)
}

func TestCloseAsksForANewConnectionEachTime(t *testing.T) {
	var closes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Close {
			closes.Add(1)
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	r := run(t, Config{URL: srv.URL, Conns: 2, MaxRequests: 30, Close: true})
	if r.OK != 30 || r.Connections != 30 || closes.Load() != 30 {
		t.Fatalf("ok %d, connections %d, requests asking to close %d; want 30 each", r.OK, r.Connections, closes.Load())
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRefusedIsCountedWithBackoff(t *testing.T) {
	addr := closedPort(t)
	var waits atomic.Int64
	cfg := Config{URL: "http://" + addr + "/", Conns: 3, Duration: 300 * time.Millisecond}
	cfg.onBackoff = func(d time.Duration) {
		if d != 10*time.Millisecond {
			t.Errorf("backoff %v, want the 10ms default", d)
		}
		waits.Add(1)
	}
	r := run(t, cfg)
	refused := r.Failed["refused"]
	if refused == 0 || r.OK != 0 {
		t.Fatalf("refused %d ok %d\n%s", refused, r.OK, r)
	}
	wantFailures(t, r, map[Kind]int64{Refused: refused})
	// Every refusal is followed by a backoff: no spinning.
	if w := waits.Load(); w != refused {
		t.Fatalf("%d refusals but %d backoffs", refused, w)
	}
	// 3 connections × 300ms / 10ms is 90; a spinning client makes thousands.
	if refused > 200 {
		t.Fatalf("%d refusals in 300ms: the client spins", refused)
	}
}

// rawServer accepts connections and runs handle on each, for misbehaving
// servers. It stops (and closes every connection) at test cleanup.
func rawServer(t *testing.T, handle func(c *net.TCPConn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn), bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// readRequest reads one request's head.
func readRequest(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	req.Body.Close()
	return true
}

func TestCountsResets(t *testing.T) {
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) {
			c.SetLinger(0) // close with RST
		}
	})
	r := run(t, Config{URL: "http://" + addr + "/", Conns: 2, MaxRequests: 20})
	wantFailures(t, r, map[Kind]int64{Reset: 20})
}

func TestCountsClosedConnections(t *testing.T) {
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		readRequest(br) // then close with FIN, no answer
	})
	r := run(t, Config{URL: "http://" + addr + "/", Conns: 2, MaxRequests: 20})
	wantFailures(t, r, map[Kind]int64{Closed: 20})
}

func TestCountsTruncatedResponses(t *testing.T) {
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) {
			fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
		}
	})
	r := run(t, Config{URL: "http://" + addr + "/", Conns: 1, MaxRequests: 5})
	wantFailures(t, r, map[Kind]int64{Closed: 5})
}

func TestCountsGarbage(t *testing.T) {
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) {
			fmt.Fprint(c, "SMTP ready\r\n\r\n")
		}
	})
	r := run(t, Config{URL: "http://" + addr + "/", Conns: 1, MaxRequests: 5})
	wantFailures(t, r, map[Kind]int64{Other: 5})
}

func TestCountsTimeouts(t *testing.T) {
	release := make(chan struct{})
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) {
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		}
	})
	defer close(release)
	r := run(t, Config{URL: "http://" + addr + "/", Conns: 3, MaxRequests: 6, Timeout: 50 * time.Millisecond})
	wantFailures(t, r, map[Kind]int64{Timeout: 6})
}

func TestRequestCutByTheEndIsNotCounted(t *testing.T) {
	release := make(chan struct{})
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) {
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		}
	})
	defer close(release)
	began := time.Now()
	r := run(t, Config{URL: "http://" + addr + "/", Conns: 4, Duration: 200 * time.Millisecond, Timeout: 20 * time.Second})
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("the run took %v: Duration does not bound it", took)
	}
	wantFailures(t, r, nil)
	if r.Requests != 0 {
		t.Fatalf("%d requests counted", r.Requests)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 100 {
			cancel()
		}
	}))
	defer srv.Close()
	r, err := Run(ctx, Config{URL: srv.URL, Conns: 2, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK < 98 || r.Failures() != 0 {
		t.Fatalf("after cancel: %s", r)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "http://127.0.0.1:1/"},
		{URL: "https://127.0.0.1:1/", MaxRequests: 1},
		{URL: "127.0.0.1:1", MaxRequests: 1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 5000 * time.Microsecond, 0.99: 9900 * time.Microsecond} {
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff < -0.03 || diff > 0.03 {
			t.Errorf("quantile(%v) = %v, want %v ±3%%", q, got, want)
		}
	}
	if h.max != 10*time.Millisecond || h.quantile(1) != h.max {
		t.Errorf("max %v, q1 %v", h.max, h.quantile(1))
	}
	for i := 0; i < 64; i++ {
		if bucketValue(bucketOf(time.Duration(i)*time.Microsecond)) != time.Duration(i)*time.Microsecond {
			t.Errorf("small value %dµs is not exact", i)
		}
	}
	if b := bucketOf(365 * 24 * time.Hour); b >= len(h.counts) {
		t.Errorf("a year lands in bucket %d", b)
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
}

func TestSpecialsAreCountedApart(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bad":
			w.WriteHeader(500)
		case "/cut":
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close()
		}
	}))
	defer srv.Close()
	r := run(t, Config{URL: srv.URL + "/", Conns: 1, MaxRequests: 400,
		Specials: []Special{{Path: "/bad", Every: 20}, {Path: "/cut", Every: 20}}})
	if r.Failures() != 0 || r.OK != 400-20-20 {
		t.Fatalf("main: %d ok, %d failed, want 360 ok and none failed", r.OK, r.Failures())
	}
	bad, cut := r.Specials[0], r.Specials[1]
	if bad.Path != "/bad" || bad.Requests != 20 || bad.Status[500] != 20 {
		t.Fatalf("/bad: %+v", bad)
	}
	if cut.Path != "/cut" || cut.Requests != 20 || cut.Failed["closed"]+cut.Failed["reset"] != 20 {
		t.Fatalf("/cut: %+v", cut)
	}
}
