package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/metrics"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "0123456789abcdef0123456789abcdef"

// fakeBackend serves two instances of "api" and records actions.
type fakeBackend struct {
	mu      sync.Mutex
	pid     int
	actions []string
}

func (f *fakeBackend) List(context.Context) ([]api.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []api.Instance{
		{App: "api", Instance: 0, Pid: f.pid, Status: "online", MemoryBytes: 30 << 20, CPUPercent: 2.5},
		{App: "api", Instance: 1, Pid: f.pid + 1, Status: "online"},
	}, nil
}
func (f *fakeBackend) Crashes(context.Context, string) ([]api.CrashGroup, error) {
	return []api.CrashGroup{{ID: "abc", App: "api", Title: "TypeError: x", Count: 2, LastStack: "at f (a.js:1)"}}, nil
}
func (f *fakeBackend) act(what string, t spec.Target) (api.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.App != "api" {
		return api.Result{}, fmt.Errorf("app %q not found", t.App)
	}
	f.actions = append(f.actions, what+" "+t.String())
	f.pid += 10
	return api.Result{Message: what}, nil
}
func (f *fakeBackend) Stop(_ context.Context, t spec.Target) (api.Result, error) {
	return f.act("stop", t)
}
func (f *fakeBackend) Restart(_ context.Context, t spec.Target) (api.Result, error) {
	return f.act("restart", t)
}
func (f *fakeBackend) Reload(_ context.Context, t spec.Target) (api.Result, error) {
	return f.act("reload", t)
}
func (f *fakeBackend) StartStopped(_ context.Context, t spec.Target) (api.Result, error) {
	return f.act("start", t)
}
func (f *fakeBackend) Scale(_ context.Context, app string, n int) (api.Result, error) {
	return f.act(fmt.Sprintf("scale %d", n), spec.Target{App: app, Instance: -1})
}
func (f *fakeBackend) WriteMetrics(_ context.Context, w io.Writer, fm metrics.Format) error {
	return metrics.Write(w, &metrics.Snapshot{}, fm)
}
func (f *fakeBackend) FollowLogs(ctx context.Context, w io.Writer, t spec.Target, lines int) error {
	fmt.Fprintf(w, `{"app":"api","instance":0,"stream":"out","line":"hello %s"}`+"\n", t)
	<-ctx.Done()
	return nil
}
func (f *fakeBackend) done() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.actions...)
}

func serve(t *testing.T) (string, *fakeBackend) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{pid: 100}
	s := web.Serve(ln, token, b, nil)
	t.Cleanup(s.Close)
	return "http://" + ln.Addr().String(), b
}

var client = &http.Client{Timeout: 10 * time.Second}

func do(t *testing.T, method, url, tok, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestTokenGuardsEverythingButMetrics(t *testing.T) {
	base, b := serve(t)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/state", ""},
		{"GET", "/api/events", ""},
		{"GET", "/api/logs?app=api", ""},
		{"POST", "/api/action", `{"action":"stop","target":"api"}`},
		{"GET", "/api/nothing", ""},
	} {
		for _, tok := range []string{"", "wrong", token[:31] + "0", token + "0"} {
			resp, body := do(t, c.method, base+c.path, tok, c.body)
			if resp.StatusCode != 401 || strings.Contains(body, "api") && !strings.Contains(body, "token") {
				t.Errorf("%s %s with token %q: %d %q, want 401 and no data", c.method, c.path, tok, resp.StatusCode, body)
			}
		}
	}
	if a := b.done(); len(a) != 0 {
		t.Fatalf("actions ran without the token: %v", a)
	}
	resp, body := do(t, "GET", base+"/metrics", "", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" ||
		!strings.Contains(body, "# TYPE keel_instance_up gauge") {
		t.Fatalf("/metrics: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body = do(t, "GET", base+"/metrics", "", "", "Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") {
		t.Fatalf("/metrics with OpenMetrics asked: %s\n%s", resp.Header.Get("Content-Type"), body)
	}
	// The page holds no data; it is served without the token.
	resp, body = do(t, "GET", base+"/", "", "")
	if resp.StatusCode != 200 || !strings.Contains(body, "<html") || strings.Contains(body, "TypeError") {
		t.Fatalf("/: %d %q", resp.StatusCode, body)
	}
}

func TestStateAndActions(t *testing.T) {
	base, b := serve(t)
	resp, body := do(t, "GET", base+"/api/state", token, "")
	var st struct {
		Instances []api.Instance   `json:"instances"`
		Crashes   []api.CrashGroup `json:"crashes"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/api/state: %d %q: %v", resp.StatusCode, body, err)
	}
	if len(st.Instances) != 2 || len(st.Crashes) != 1 || st.Crashes[0].LastStack == "" {
		t.Fatalf("/api/state: %+v", st)
	}
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"action":"restart","target":"api:1"}`, 200, "restart api:1"},
		{`{"action":"reload","target":"api"}`, 200, "reload api"},
		{`{"action":"stop","target":"api"}`, 200, "stop api"},
		{`{"action":"start","target":"api"}`, 200, "start api"},
		{`{"action":"scale","target":"api","instances":4}`, 200, "scale 4 api"},
		{`{"action":"scale","target":"api","instances":0}`, 400, ""},
		{`{"action":"scale","target":"api:1","instances":3}`, 400, ""},
		{`{"action":"explode","target":"api"}`, 400, ""},
		{`{"action":"stop","target":"no such"}`, 400, ""},
		{`{"action":"stop","target":"other"}`, 404, ""},
		{`{"action":"stop"`, 400, ""},
		{`{"action":"stop","target":"api","extra":1}`, 400, ""},
	} {
		before := len(b.done())
		resp, body := do(t, "POST", base+"/api/action", token, c.body)
		if resp.StatusCode != c.code {
			t.Errorf("action %s: %d %q, want %d", c.body, resp.StatusCode, body, c.code)
		}
		if c.code != 200 && !strings.Contains(body, `"error"`) {
			t.Errorf("action %s: answer %q has no error", c.body, body)
		}
		a := b.done()
		if c.want != "" && (len(a) != before+1 || a[len(a)-1] != c.want) {
			t.Errorf("action %s: backend saw %v, want %q", c.body, a, c.want)
		}
	}
	if resp, _ := do(t, "GET", base+"/api/action", token, ""); resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /api/action: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "POST", base+"/metrics", "", ""); resp.StatusCode != 405 {
		t.Errorf("POST /metrics: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", base+"/assets/../../etc/passwd", "", ""); resp.StatusCode != 404 {
		t.Errorf("path escape: %d", resp.StatusCode)
	}
}

// readEvent reads one Server-Sent Event.
func readEvent(t *testing.T, br *bufio.Reader) (name, data string) {
	t.Helper()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && name != "":
			return name, data
		case strings.HasPrefix(line, "event: "):
			name = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
}

func TestEventsPushChanges(t *testing.T) {
	base, b := serve(t)
	req, _ := http.NewRequest("GET", base+"/api/events", nil)
	req.Header.Set("X-Keel-Token", token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	if name, _ := readEvent(t, br); name != "history" {
		t.Fatalf("first event %q, want history", name)
	}
	name, data := readEvent(t, br)
	if name != "state" || !strings.Contains(data, `"pid":100`) {
		t.Fatalf("event %s %s", name, data)
	}
	do(t, "POST", base+"/api/action", token, `{"action":"restart","target":"api"}`)
	_ = b
	for {
		name, data := readEvent(t, br)
		if name == "state" && strings.Contains(data, `"pid":110`) {
			break
		}
	}
}

func TestLogTail(t *testing.T) {
	base, _ := serve(t)
	req, _ := http.NewRequest("GET", base+"/api/logs?app=api:0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	name, data := readEvent(t, bufio.NewReader(resp.Body))
	if name != "log" || !strings.Contains(data, "hello api:0") {
		t.Fatalf("log event %s %s", name, data)
	}
	if resp, _ := do(t, "GET", base+"/api/logs?app=a%20b", token, ""); resp.StatusCode != 400 {
		t.Fatalf("bad app: %d", resp.StatusCode)
	}
}

func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestBadInput(t *testing.T) {
	base, _ := serve(t)
	addr := strings.TrimPrefix(base, "http://")
	for _, c := range []struct{ req, want string }{
		{"GARBAGE\r\n\r\n", "HTTP/1.1 400 "},
		{"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n", "HTTP/1.1 505 "},
		{"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"POST /api/action HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", "HTTP/1.1 413 "},
		{"GET /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\nConnection: close\r\n\r\n", "HTTP/1.1 401 "},
	} {
		got := rawExchange(t, addr, c.req)
		if !strings.HasPrefix(got, c.want) || !strings.Contains(got, `"error"`) {
			t.Errorf("%.60q: got %.200q, want %q with a JSON error", c.req, got, c.want)
		}
	}
}

// TestManyConnections opens far more connections than the listener
// serves at once, all idle (slow clients); the listener sheds the excess
// and answers again once they are gone.
func TestManyConnections(t *testing.T) {
	base, _ := serve(t)
	addr := strings.TrimPrefix(base, "http://")
	var conns []net.Conn
	for i := 0; i < 1000; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			break // the backlog is full: that is shedding too
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close()
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/metrics")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener does not answer after a flood: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
