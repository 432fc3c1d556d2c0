package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keel-run/keel/internal/poll"
)

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type webInfo struct {
	URL    string `json:"url"`
	Listen string `json:"listen"`
	Token  string `json:"token"`
}

// webOn turns the listener on at a free port and returns what keel web
// --json printed.
func (e *env) webOn(extra ...string) webInfo {
	e.t.Helper()
	addr := freeAddr(e.t)
	var w webInfo
	out := e.ok(append([]string{"web", "--listen", addr, "--json"}, extra...)...)
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		e.t.Fatalf("keel web --json printed %q: %v", out, err)
	}
	if w.Listen != addr || w.URL != "http://"+addr+"/#token="+w.Token || len(w.Token) != 32 {
		e.t.Fatalf("keel web --json: %+v (asked for %s)", w, addr)
	}
	return w
}

var webClient = &http.Client{Timeout: 10 * time.Second}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := webClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics with Prometheus's own parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// sample is the value of the sample of fams[name] with exactly these
// label values among its labels, or -1.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		if m.Counter != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}

func TestWebListener(t *testing.T) {
	e := newEnv(t)
	e.app("svc", "sleep", "-i", "2")
	before := e.waitFor("2 online", allStatus("svc", 2, "online"))
	w := e.webOn()

	st, err := os.Stat(filepath.Join(e.home, "web.token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("web.token: %v, mode %v", err, st.Mode())
	}
	var fams map[string]*dto.MetricFamily
	// The stats cache samples every second.
	poll.Until(t, 10*time.Second, "memory figures in /metrics", func() bool {
		fams = scrape(t, w.Listen)
		return sample(fams, "keel_instance_memory_bytes", "app", "svc", "instance", "0") > 0 &&
			sample(fams, "keel_instance_memory_bytes", "app", "svc", "instance", "1") > 0
	})
	for i := range 2 {
		inst := fmt.Sprint(i)
		if v := sample(fams, "keel_instance_up", "app", "svc", "instance", inst); v != 1 {
			t.Fatalf("keel_instance_up{svc,%s} = %v", inst, v)
		}
		if v := sample(fams, "keel_instance_memory_bytes", "app", "svc", "instance", inst); v <= 0 {
			t.Fatalf("keel_instance_memory_bytes{svc,%s} = %v", inst, v)
		}
	}
	// The keepers count what the apps print ("sleeping <pid>\n" each).
	poll.Until(t, 20*time.Second, "log bytes in /metrics", func() bool {
		return sample(scrape(t, w.Listen), "keel_log_bytes_total", "app", "svc", "stream", "out") >= float64(2*len("sleeping 1\n"))
	})
	if v := sample(fams, "keel_app_instances_ready", "app", "svc"); v != 2 {
		t.Fatalf("keel_app_instances_ready = %v", v)
	}
	if sample(fams, "process_resident_memory_bytes") <= 0 || sample(fams, "go_goroutines") <= 0 {
		t.Fatal("no process_* or go_* families")
	}
	// Nothing of the apps' environment, command line or logs.
	_, body := get(t, "http://"+w.Listen+"/metrics", "")
	for _, secret := range []string{"KEEL_E2E_APP", e.home, os.Args[0]} {
		if strings.Contains(body, secret) {
			t.Fatalf("/metrics shows %q", secret)
		}
	}

	// The data needs the token.
	if code, body := get(t, "http://"+w.Listen+"/api/state", ""); code != 401 || strings.Contains(body, "svc") {
		t.Fatalf("/api/state without a token: %d %s", code, body)
	}
	if code, body := get(t, "http://"+w.Listen+"/api/state", w.Token); code != 200 || !strings.Contains(body, `"app":"svc"`) {
		t.Fatalf("/api/state: %d %s", code, body)
	}

	// A SIGKILLed instance is counted as a crash restart.
	syscall.Kill(before[0].Pid, syscall.SIGKILL)
	poll.Until(t, 20*time.Second, "a crash restart in /metrics", func() bool {
		f := scrape(t, w.Listen)
		return sample(f, "keel_instance_restarts_total", "app", "svc", "instance", fmt.Sprint(before[0].Instance), "reason", "crash") == 1 &&
			sample(f, "keel_app_instances_ready", "app", "svc") == 2
	})

	// A flood of connections, some idle, some garbage, some with bad
	// tokens: keel ls keeps answering throughout, and the listener after.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", w.Listen, 5*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			switch i % 4 {
			case 0:
				<-stop // a slow client that never sends
			case 1:
				io.WriteString(c, "BOGUS / HTTP/1.1\r\n\r\n")
			case 2:
				io.WriteString(c, "GET /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
			case 3:
				io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nX: "+strings.Repeat("x", 40000)+"\r\n\r\n")
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c)
		}()
	}
	for range 5 {
		if l := e.ls(); len(l) != 2 {
			t.Fatalf("keel ls under a flood: %+v", l)
		}
	}
	close(stop)
	wg.Wait()
	poll.Until(t, 20*time.Second, "the listener to answer after the flood", func() bool {
		resp, err := webClient.Get("http://" + w.Listen + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// The setting and the token hold across a daemon restart.
	e.killDaemon()
	e.ls() // starts a new daemon
	poll.Until(t, 20*time.Second, "the listener back after a daemon restart", func() bool {
		req, _ := http.NewRequest("GET", "http://"+w.Listen+"/api/state", nil)
		req.Header.Set("Authorization", "Bearer "+w.Token)
		resp, err := webClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Off, and off after a restart too.
	if out := e.ok("web", "--off"); !strings.Contains(out, "off") {
		t.Fatalf("keel web --off printed %q", out)
	}
	if _, err := webClient.Get("http://" + w.Listen + "/metrics"); err == nil {
		t.Fatal("the listener still answers after keel web --off")
	}
	e.killDaemon()
	e.ls()
	if _, err := webClient.Get("http://" + w.Listen + "/metrics"); err == nil {
		t.Fatal("the listener came back after a restart though it was off")
	}
	var cfg bytes.Buffer
	b, _ := os.ReadFile(filepath.Join(e.home, "web.json"))
	cfg.Write(b)
	if !strings.Contains(cfg.String(), `"on":false`) {
		t.Fatalf("web.json: %s", cfg.String())
	}
}

func TestWebWarnsOffLoopback(t *testing.T) {
	e := newEnv(t)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	r := e.keel("web", "--listen", "0.0.0.0:"+port)
	if r.code != 0 || !strings.Contains(r.err, "warning") || !strings.Contains(r.err, "reachable from other machines") {
		t.Fatalf("keel web on 0.0.0.0: exit %d\nstdout %s\nstderr %s", r.code, r.out, r.err)
	}
	r = e.keel("web", "--listen", "nonsense")
	if r.code != 2 || !strings.Contains(r.err, "host:port") {
		t.Fatalf("keel web --listen nonsense: exit %d, stderr %q", r.code, r.err)
	}
}
