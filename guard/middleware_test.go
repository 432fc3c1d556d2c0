package guard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// newServer serves h behind Middleware on a real socket, with a logger that
// records, and returns both. The server is closed (all handlers finished)
// at cleanup.
func newServer(t *testing.T, h http.Handler) (*httptest.Server, *logRecorder) {
	t.Helper()
	rec := newLogRecorder()
	srv := httptest.NewUnstartedServer(Middleware(slog.New(rec))(h))
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, rec
}

// get does a GET with optional headers through a fresh transport.
func get(t *testing.T, url string, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: waitFor}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// rawGet sends a GET over a raw connection and returns every byte the server
// sent until it closed the connection.
func rawGet(t *testing.T, addr, path string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path)
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading raw response: %v (got %q)", err, b)
	}
	return string(b)
}

var hexID = regexp.MustCompile(`^[0-9a-f]{16}$`)

func panickingHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", `"v1"`)
	panic("handler bug")
}

func TestPanickingHandlerGets500WhileOthersSucceed(t *testing.T) {
	const others = 50
	started := make(chan struct{}, others)
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", panickingHandler)
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release // in flight while the other request panics
		fmt.Fprintf(w, "ok %s", r.URL.Query().Get("n"))
	})
	srv, logs := newServer(t, mux)

	type result struct {
		n      int
		status int
		body   string
		err    error
	}
	results := make(chan result, others)
	tr := &http.Transport{MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: waitFor}
	for i := range others {
		go func() {
			resp, err := client.Get(fmt.Sprintf("%s/ok?n=%d", srv.URL, i))
			if err != nil {
				results <- result{n: i, err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{i, resp.StatusCode, string(b), err}
		}()
	}
	for range others {
		select {
		case <-started:
		case <-time.After(waitFor):
			t.Fatal("the other requests did not all start")
		}
	}

	resp, body, err := get(t, srv.URL+"/panic")
	close(release)
	if err != nil {
		t.Fatalf("GET /panic: %v", err)
	}
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if resp.Header.Get("ETag") != "" {
		t.Error("the handler's ETag survived into the 500")
	}
	id := resp.Header.Get("X-Request-Id")
	if !hexID.MatchString(id) {
		t.Errorf("X-Request-Id = %q, want 16 generated hex digits", id)
	}
	want := "500 Internal Server Error: the server failed while handling this request\nrequest id: " + id + "\n"
	if string(body) != want {
		t.Errorf("body = %q, want %q", body, want)
	}
	if strings.Contains(string(body), "handler bug") {
		t.Error("the panic value leaked to the client")
	}

	for range others {
		select {
		case r := <-results:
			if r.err != nil || r.status != http.StatusOK || r.body != fmt.Sprintf("ok %d", r.n) {
				t.Errorf("other request %d: status %d body %q err %v", r.n, r.status, r.body, r.err)
			}
		case <-time.After(waitFor):
			t.Fatal("the other requests did not all finish")
		}
	}

	rec := logs.next(t)
	checkRecord(t, rec, map[string]string{
		"msg": "guard: panic serving request", "level": "ERROR", "method": "GET", "path": "/panic",
		"request_id": id, "error": "panic: handler bug", "outcome": "answered 500",
	})
	if !strings.Contains(rec["stack"], "guard.panickingHandler") {
		t.Errorf("stack lacks the handler:\n%s", rec["stack"])
	}
	srv.Close()
	logs.none(t)
}

func checkRecord(t *testing.T, rec map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("log record %s = %q, want %q (record %v)", k, rec[k], v, rec)
		}
	}
}

func TestPanicAnswerIsProblemJSONWhenAccepted(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(panickingHandler))
	resp, body, err := get(t, srv.URL+"/x", "Accept", "application/json", "X-Request-Id", "req-123")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	want := map[string]any{"type": "about:blank", "title": "Internal Server Error", "status": 500.0,
		"detail": "the server failed while handling this request", "request_id": "req-123"}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("problem %s = %v, want %v", k, p[k], v)
		}
	}
	if len(p) != len(want) {
		t.Errorf("problem has extra members: %v", p)
	}
	if resp.Header.Get("X-Request-Id") != "req-123" {
		t.Errorf("X-Request-Id = %q", resp.Header.Get("X-Request-Id"))
	}
	checkRecord(t, logs.next(t), map[string]string{"request_id": "req-123", "path": "/x"})
}

func TestPrefersJSON(t *testing.T) {
	cases := map[string]bool{
		"":                                   false,
		"*/*":                                false,
		"application/json":                   true,
		"application/problem+json":           true,
		"application/vnd.api+json":           true,
		"text/plain":                         false,
		"application/json, */*":              true,
		"text/plain, application/json":       false,
		"text/plain;q=0.5, application/json": true,
		"application/json;q=0, */*":          false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": false,
		"application/*":                  true,
		"text/*, application/json;q=0.9": false,
		"APPLICATION/JSON; q=1.0":        true,
		"application/json;q=bogus":       false,
	}
	for accept, want := range cases {
		if got := prefersJSON([]string{accept}); got != want {
			t.Errorf("prefersJSON(%q) = %v, want %v", accept, got, want)
		}
	}
}

func scopedPanic(context.Context) error { panic("scoped goroutine bug") }

func TestPanicInRequestScopeGoroutineAnswers500(t *testing.T) {
	lateWrite := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/scoped", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		s := ScopeOf(w)
		s.Go(scopedPanic)
		<-s.Context().Done()
		// The handler carries on after the failure: its writes are refused
		// so that the client gets the 500.
		_, err := w.Write([]byte("late"))
		lateWrite <- err
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "alive") })
	srv, logs := newServer(t, mux)

	resp, body, err := get(t, srv.URL+"/scoped")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || strings.Contains(string(body), "late") {
		t.Errorf("status %d body %q, want a 500 without the handler's late write", resp.StatusCode, body)
	}
	if err := <-lateWrite; !errors.Is(err, ErrResponseClosed) {
		t.Errorf("late Write error = %v, want ErrResponseClosed", err)
	}
	rec := logs.next(t)
	checkRecord(t, rec, map[string]string{"path": "/scoped", "outcome": "answered 500",
		"error": "panic: scoped goroutine bug", "request_id": resp.Header.Get("X-Request-Id")})
	if !strings.Contains(rec["stack"], "guard.scopedPanic") {
		t.Errorf("stack lacks the goroutine's function:\n%s", rec["stack"])
	}

	// The process lives on and serves.
	resp, body, err = get(t, srv.URL+"/ok")
	if err != nil || resp.StatusCode != 200 || string(body) != "alive" {
		t.Fatalf("after the panic: %v %v %q", err, resp, body)
	}
	srv.Close()
	logs.none(t)
}

func TestHandlerWaitingOnScopeGetsTheFailure(t *testing.T) {
	waited := make(chan error, 1)
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := ScopeOf(w)
		s.Go(func(context.Context) error { return nil })
		s.Go(scopedPanic)
		err := s.Wait()
		waited <- err
		if r.Context().Err() != nil {
			panic("the request's context must outlive the scope's failure")
		}
	}))
	resp, _, err := get(t, srv.URL+"/")
	if err != nil || resp.StatusCode != 500 {
		t.Fatalf("got %v %v, want 500", resp, err)
	}
	var pe *PanicError
	if err := <-waited; !errors.As(err, &pe) || pe.Value != "scoped goroutine bug" {
		t.Errorf("Wait() = %v", err)
	}
	checkRecord(t, logs.next(t), map[string]string{"outcome": "answered 500", "error": "panic: scoped goroutine bug"})
	srv.Close()
	logs.none(t)
}

func TestNothingWrittenTwiceAfterPartialWrite(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic("mid-response bug")
	}))
	raw := rawGet(t, srv.Listener.Addr().String(), "/p")
	if n := strings.Count(raw, "HTTP/1.1 "); n != 1 {
		t.Errorf("%d status lines in %q, want 1", n, raw)
	}
	if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.Contains(raw, "partial") {
		t.Errorf("raw response %q lacks the handler's partial 200", raw)
	}
	if strings.Contains(raw, "500") || strings.Contains(raw, "Internal Server Error") {
		t.Errorf("a 500 was written after the partial response: %q", raw)
	}
	if strings.HasSuffix(raw, "0\r\n\r\n") {
		t.Errorf("the chunked body was terminated; the client cannot tell it is truncated: %q", raw)
	}
	checkRecord(t, logs.next(t), map[string]string{"outcome": "response already started; connection aborted",
		"error": "panic: mid-response bug"})

	// Through a client: the status is the handler's, and reading the body
	// fails rather than ending cleanly.
	resp, body, err := get(t, srv.URL+"/p")
	if resp == nil || resp.StatusCode != 200 || err == nil || string(body) != "partial" {
		t.Errorf("client saw %v, body %q, read error %v; want 200, \"partial\", an error", resp, body, err)
	}
	logs.next(t)
	srv.Close()
	logs.none(t)
}

func TestScopePanicWhileHandlerWrites(t *testing.T) {
	writes := make(chan error, 1)
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first part;")
		w.(http.Flusher).Flush()
		s := ScopeOf(w)
		s.Go(scopedPanic)
		<-s.Context().Done()
		_, err := io.WriteString(w, "second part")
		writes <- err
	}))
	raw := rawGet(t, srv.Listener.Addr().String(), "/w")
	if strings.Count(raw, "HTTP/1.1 ") != 1 || !strings.Contains(raw, "first part;") ||
		strings.Contains(raw, "second part") || strings.Contains(raw, "500") || strings.HasSuffix(raw, "0\r\n\r\n") {
		t.Errorf("raw response %q: want only the first part, unterminated", raw)
	}
	if err := <-writes; !errors.Is(err, ErrResponseClosed) {
		t.Errorf("write after the scope failed: %v, want ErrResponseClosed", err)
	}
	checkRecord(t, logs.next(t), map[string]string{"outcome": "response already started; connection aborted"})
	srv.Close()
	logs.none(t)
}

func TestScopeGoroutinePanickingAfterHandlerReturned(t *testing.T) {
	release := make(chan struct{})
	lateWrite := make(chan error, 1)
	var ctxErr error
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/late" {
			// The check that the server still serves: with release
			// closed, a late goroutine here would panic while its
			// handler runs, and abort this request.
			io.WriteString(w, "done")
			return
		}
		ScopeOf(w).Go(func(ctx context.Context) error {
			<-release
			ctxErr = ctx.Err()
			_, err := w.Write([]byte("too late"))
			lateWrite <- err
			panic("late bug")
		})
		io.WriteString(w, "done")
	}))
	resp, body, err := get(t, srv.URL+"/late", "X-Request-Id", "late-1")
	if err != nil || resp.StatusCode != 200 || string(body) != "done" {
		t.Fatalf("got %v %q %v, want a complete 200", resp, body, err)
	}
	close(release)
	rec := logs.next(t)
	checkRecord(t, rec, map[string]string{"outcome": "after the response: the handler had returned",
		"error": "panic: late bug", "request_id": "late-1", "path": "/late", "method": "GET"})
	if err := <-lateWrite; !errors.Is(err, ErrResponseClosed) {
		t.Errorf("write after the handler returned: %v, want ErrResponseClosed", err)
	}
	if ctxErr != context.Canceled {
		t.Errorf("scope context after the handler returned: %v, want canceled", ctxErr)
	}
	resp, _, err = get(t, srv.URL+"/late2")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("server unusable after a late panic: %v %v", resp, err)
	}
	srv.Close()
}

func TestEveryPanicOfARequestIsLoggedOnce(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := ScopeOf(w)
		s.Go(scopedPanic)
		<-s.Context().Done()
		panic("handler bug after the scope failed")
	}))
	resp, _, err := get(t, srv.URL+"/two")
	if err != nil || resp.StatusCode != 500 {
		t.Fatalf("got %v %v", resp, err)
	}
	checkRecord(t, logs.next(t), map[string]string{"outcome": "answered 500", "error": "panic: scoped goroutine bug"})
	checkRecord(t, logs.next(t), map[string]string{"outcome": "the request had already failed",
		"error": "panic: handler bug after the scope failed"})
	srv.Close()
	logs.none(t)
}

func TestErrAbortHandlerAbortsSilently(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/handler", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/scope", func(w http.ResponseWriter, r *http.Request) {
		s := ScopeOf(w)
		s.Go(func(context.Context) error { panic(http.ErrAbortHandler) })
		s.Wait()
	})
	srv, logs := newServer(t, mux)
	for _, path := range []string{"/handler", "/scope"} {
		raw := rawGet(t, srv.Listener.Addr().String(), path)
		if strings.Contains(raw, "500") || strings.HasSuffix(raw, "0\r\n\r\n") {
			t.Errorf("%s: raw response %q, want an aborted connection", path, raw)
		}
		if path == "/scope" && raw != "" {
			t.Errorf("%s: the server wrote %q; want nothing", path, raw)
		}
	}
	srv.Close()
	logs.none(t)
}

func TestHijackedConnectionIsLeftAlone(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		brw.WriteString("hijacked\n")
		brw.Flush()
		c.Close()
		panic("after hijack")
	}))
	raw := rawGet(t, srv.Listener.Addr().String(), "/h")
	if raw != "hijacked\n" {
		t.Errorf("raw = %q", raw)
	}
	checkRecord(t, logs.next(t), map[string]string{"outcome": "the connection was hijacked; nothing answered"})
}

func TestInformationalStatusDoesNotStartTheResponse(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		panic("after early hints")
	}))
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(c))
	var statuses []string
	for {
		line, err := tp.ReadLine()
		if err != nil {
			t.Fatalf("after %v: %v", statuses, err)
		}
		statuses = append(statuses, line)
		if _, err := tp.ReadMIMEHeader(); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, "HTTP/1.1 1") {
			break
		}
	}
	if len(statuses) != 2 || statuses[0] != "HTTP/1.1 103 Early Hints" || statuses[1] != "HTTP/1.1 500 Internal Server Error" {
		t.Errorf("status lines = %q, want 103 then 500", statuses)
	}
	checkRecord(t, logs.next(t), map[string]string{"outcome": "answered 500"})
}

func TestRequestID(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	h := Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		// The two ways to the id, through the writer and through a context
		// from Request, give the same one.
		seen = append(seen, RequestIDOf(w), RequestID(Request(w, r).Context()))
		mu.Unlock()
	}))
	for _, hdr := range []string{"", "abc-123", strings.Repeat("x", 129), "has space", "ok\x7f"} {
		r := httptest.NewRequest("GET", "/", nil)
		if hdr != "" {
			r.Header.Set("X-Request-Id", hdr)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	if len(seen) != 10 {
		t.Fatalf("seen %q", seen)
	}
	for i := 0; i < len(seen); i += 2 {
		if seen[i] != seen[i+1] {
			t.Errorf("request %d: RequestID changed between calls: %q, %q", i/2, seen[i], seen[i+1])
		}
	}
	if seen[2] != "abc-123" {
		t.Errorf("client's id not used: %q", seen[2])
	}
	for _, i := range []int{0, 4, 6, 8} {
		if !hexID.MatchString(seen[i]) {
			t.Errorf("request %d: id %q, want a generated one", i/2, seen[i])
		}
	}
	if seen[0] == seen[4] {
		t.Error("two generated ids are equal")
	}
	if RequestID(context.Background()) != "" {
		t.Error("RequestID outside a request is not empty")
	}
	if RequestIDOf(httptest.NewRecorder()) != "" {
		t.Error("RequestIDOf outside Middleware is not empty")
	}
}

func TestOnPanicHooksAreCalledForEachPanic(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	hook := func(name string) func(*PanicError) {
		return func(pe *PanicError) {
			mu.Lock()
			calls = append(calls, fmt.Sprintf("%s:%v", name, pe.Value))
			mu.Unlock()
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", panickingHandler)
	mux.HandleFunc("/abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	mux.HandleFunc("/ok", func(http.ResponseWriter, *http.Request) {})
	srv := httptest.NewUnstartedServer(Middleware(slog.New(slog.DiscardHandler))(mux))
	srv.Config.BaseContext = func(net.Listener) context.Context {
		return OnPanic(OnPanic(context.Background(), hook("outer")), hook("inner"))
	}
	srv.Start()
	defer srv.Close()

	for _, p := range []string{"/ok", "/panic", "/abort", "/ok"} {
		get(t, srv.URL+p)
	}
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(calls, ",") != "outer:handler bug,inner:handler bug" {
		t.Errorf("hook calls = %q", calls)
	}
}

func TestNestedMiddlewareHandlesEachPanicOnce(t *testing.T) {
	outer, inner := newLogRecorder(), newLogRecorder()
	h := Middleware(slog.New(outer))(Middleware(slog.New(inner))(http.HandlerFunc(panickingHandler)))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, _, err := get(t, srv.URL+"/")
	if err != nil || resp.StatusCode != 500 {
		t.Fatalf("%v %v", resp, err)
	}
	inner.next(t)
	srv.Close()
	inner.none(t)
	outer.none(t)
}

// A goroutine of the scope panics while the handler writes, with no order
// imposed: whichever comes first, the client sees one response — a clean 500
// with none of the handler's data, or the handler's response cut off (sent
// in part, or not at all if it was still buffered) — never both, and exactly
// one record is logged.
func TestScopePanicRacingHandlerWrites(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := ScopeOf(w)
		start := make(chan struct{})
		s.Go(func(context.Context) error {
			<-start
			panic("racing")
		})
		close(start)
		yields, _ := strconv.Atoi(r.URL.Query().Get("yield"))
		for range yields { // vary who wins
			runtime.Gosched()
		}
		for range 100 {
			if _, err := io.WriteString(w, "data;"); err != nil {
				break
			}
		}
		<-s.Context().Done()
	}))
	var answered, aborted int
	for i := range 100 {
		raw := rawGet(t, srv.Listener.Addr().String(), "/race?yield="+strconv.Itoa(i%8))
		rec := logs.next(t)
		switch {
		case strings.HasPrefix(raw, "HTTP/1.1 500 "):
			answered++
			if strings.Contains(raw, "data;") || rec["outcome"] != "answered 500" {
				t.Fatalf("a 500 with handler data, or logged as %q: %q", rec["outcome"], raw)
			}
		case raw == "" || strings.HasPrefix(raw, "HTTP/1.1 200 "):
			// The handler's data was still in the server's buffer (nothing on
			// the wire) or partly sent: either way the connection is cut.
			aborted++
			if strings.Contains(raw, "500") || strings.HasSuffix(raw, "0\r\n\r\n") ||
				strings.Count(raw, "HTTP/1.1 ") > 1 ||
				rec["outcome"] != "response already started; connection aborted" {
				t.Fatalf("a 200 not cut off, or logged as %q: %q", rec["outcome"], raw)
			}
		default:
			t.Fatalf("unexpected response %q", raw)
		}
	}
	t.Logf("500 answered: %d, partial response aborted: %d", answered, aborted)
	srv.Close()
	logs.none(t)
}

// Middleware hands the handler the server's request itself, not a copy: the
// request's state lives in the writer.
func TestHandlerGetsTheServersRequest(t *testing.T) {
	var got *http.Request
	var gotW http.ResponseWriter
	var flushErr error
	h := Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotW = r, w
		flushErr = http.NewResponseController(w).Flush()
	}))
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if got != r {
		t.Error("the handler got a copy of the request")
	}
	if gotW == http.ResponseWriter(w) {
		t.Error("the handler got the server's writer, not Middleware's")
	}
	if flushErr != nil || !w.Flushed {
		t.Error("http.ResponseController cannot reach the server's writer")
	}
}

// unwrapper is another middleware's writer that follows the
// http.ResponseController convention.
type unwrapper struct {
	http.ResponseWriter
	status int
}

func (u *unwrapper) WriteHeader(code int) {
	u.status = code
	u.ResponseWriter.WriteHeader(code)
}

func (u *unwrapper) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func TestAccessorsOutsideMiddleware(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	for name, w := range map[string]http.ResponseWriter{
		"server's writer":        httptest.NewRecorder(),
		"wrapper with Unwrap":    &unwrapper{ResponseWriter: httptest.NewRecorder()},
		"wrapper without Unwrap": struct{ http.ResponseWriter }{httptest.NewRecorder()},
	} {
		if s := ScopeOf(w); s != nil {
			t.Errorf("%s: ScopeOf = %v, want nil", name, s)
		}
		if id := RequestIDOf(w); id != "" {
			t.Errorf("%s: RequestIDOf = %q, want \"\"", name, id)
		}
		if got := Request(w, r); got != r {
			t.Errorf("%s: Request returned a new request", name)
		}
	}
	if ScopeFrom(r.Context()) != nil || RequestID(r.Context()) != "" {
		t.Error("a plain request's context carries a scope or an id")
	}
}

// The handler's own request context does not carry the state (Middleware
// does not copy the request); Request adds it.
func TestHandlersContextNeedsRequest(t *testing.T) {
	h := Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ScopeFrom(r.Context()) != nil || RequestID(r.Context()) != "" {
			t.Error("the server's request context carries the state")
		}
		r2 := Request(w, r)
		if r2 == r || ScopeFrom(r2.Context()) != ScopeOf(w) || RequestID(r2.Context()) != "ctx-1" {
			t.Error("Request's context does not carry the request's state")
		}
		if Request(w, r2) != r2 {
			t.Error("Request copied a request that already carries the state")
		}
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Request-Id", "ctx-1")
	h.ServeHTTP(httptest.NewRecorder(), r)
}

// Inside Middleware, another middleware wraps the writer (with Unwrap) and
// adds a value to the request's context. The handler finds the request's
// scope and id through the wrapper, in both orders (context first, writer
// second), the scope's goroutines find them in their context, and a panic
// in one of them answers the request 500 through the wrapper.
func TestAccessorsThroughAnotherMiddlewaresWriter(t *testing.T) {
	type innerKey struct{}
	inner := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u := &unwrapper{ResponseWriter: w}
			next.ServeHTTP(u, r.WithContext(context.WithValue(r.Context(), innerKey{}, "inner")))
		})
	}
	type seen struct {
		id, ctxID, goID      string
		sameScope, goScope   bool
		innerValue, noUnwrap bool
		ctxAlive             bool
	}
	results := make(chan seen, 1)
	srv, logs := newServer(t, inner(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		r = Request(w, r)
		ctx := r.Context()
		fromCtx := ScopeFrom(ctx)
		sc := ScopeOf(w)
		s.sameScope = fromCtx != nil && fromCtx == sc && ScopeOf(w) == sc
		s.id, s.ctxID = RequestIDOf(w), RequestID(ctx)
		s.innerValue = ctx.Value(innerKey{}) == "inner"
		s.noUnwrap = ScopeOf(struct{ http.ResponseWriter }{w}) == nil
		sc.Go(func(ctx context.Context) error {
			s.goScope = ScopeFrom(ctx) == sc
			s.goID = RequestID(ctx)
			return nil
		})
		if err := sc.Wait(); err != nil {
			panic(err)
		}
		sc.Go(scopedPanic)
		<-sc.Context().Done()
		s.ctxAlive = ctx.Err() == nil // the request's context outlives the failure
		results <- s
	})))

	resp, _, err := get(t, srv.URL+"/wrapped", "X-Request-Id", "wrapped-1")
	if err != nil || resp.StatusCode != 500 || resp.Header.Get("X-Request-Id") != "wrapped-1" {
		t.Fatalf("got %v %v, want a 500 with the request id", resp, err)
	}
	s := <-results
	want := seen{id: "wrapped-1", ctxID: "wrapped-1", goID: "wrapped-1",
		sameScope: true, goScope: true, innerValue: true, noUnwrap: true, ctxAlive: true}
	if s != want {
		t.Errorf("seen %+v, want %+v", s, want)
	}
	rec := logs.next(t)
	checkRecord(t, rec, map[string]string{"path": "/wrapped", "method": "GET", "request_id": "wrapped-1",
		"outcome": "answered 500", "error": "panic: scoped goroutine bug"})
	if !strings.Contains(rec["stack"], "guard.scopedPanic") {
		t.Errorf("stack lacks the goroutine's function:\n%s", rec["stack"])
	}
	srv.Close()
	logs.none(t)
}

// A scope asked for after the handler returned starts canceled, so its
// goroutines see at once that the request is over.
func TestScopeOfAfterTheHandlerReturned(t *testing.T) {
	var saved http.ResponseWriter
	h := Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		saved = w
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	s := ScopeOf(saved)
	if s == nil {
		t.Fatal("ScopeOf = nil for a writer from Middleware")
	}
	if s.Context().Err() != context.Canceled {
		t.Errorf("late scope's context: %v, want canceled", s.Context().Err())
	}
	if _, err := saved.Write([]byte("x")); !errors.Is(err, ErrResponseClosed) {
		t.Errorf("late Write: %v, want ErrResponseClosed", err)
	}
}

// WriteError names the request's id behind Middleware: found through w, or,
// behind a writer without Unwrap, in the context of a request from Request.
func TestWriteErrorCarriesTheRequestID(t *testing.T) {
	h := Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/opaque" {
			WriteError(struct{ http.ResponseWriter }{w}, Request(w, r), http.StatusBadRequest, "bad")
			return
		}
		WriteError(w, r, http.StatusBadRequest, "bad")
	}))
	for _, path := range []string{"/direct", "/opaque"} {
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set("X-Request-Id", "err-1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 400 || w.Header().Get("X-Request-Id") != "err-1" ||
			w.Body.String() != "400 Bad Request: bad\nrequest id: err-1\n" {
			t.Errorf("%s: %d %q %q", path, w.Code, w.Header().Get("X-Request-Id"), w.Body.String())
		}
	}
}
