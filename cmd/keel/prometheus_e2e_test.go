package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"
)

// promQuery asks a Prometheus server's HTTP API for an instant vector and
// returns its samples' labels and values.
func promQuery(t *testing.T, addr, q string) []promSample {
	t.Helper()
	resp, err := webClient.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil // not up yet
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	if resp.StatusCode != 200 {
		return nil
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s", q, err, body)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		v, _ := s.Value[1].(string)
		out = append(out, promSample{s.Metric, v})
	}
	return out
}

type promSample struct {
	labels map[string]string
	value  string
}

// TestPrometheusScrapes has a real Prometheus server (Debian's prometheus
// package, which .ci/run installs) scrape the daemon, then asks its API
// what it saw: both instances up, and the crash restart of a SIGKILLed
// one. Prometheus negotiates OpenMetrics, so this checks that format too.
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed: .ci/run installs Debian's prometheus package (apt-get install prometheus); this test needs it")
	}
	e := newEnv(t)
	e.app("svc", "sleep", "-i", "2")
	before := e.waitFor("2 online", allStatus("svc", 2, "online"))
	w := e.webOn()

	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: keel\n    static_configs:\n      - targets: [%q]\n", w.Listen)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus.log:\n%s", tail(string(b), 3000))
		}
	})

	poll.Until(t, 60*time.Second, "Prometheus to see both instances up", func() bool {
		s := promQuery(t, promAddr, `keel_instance_up{app="svc"} == 1`)
		return len(s) == 2
	})
	// The scrape is healthy: no error on the target.
	code, body := get(t, "http://"+promAddr+"/api/v1/targets", "")
	var targets struct {
		Data struct {
			Active []struct {
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if json.Unmarshal([]byte(body), &targets); code != 200 || len(targets.Data.Active) != 1 || targets.Data.Active[0].Health != "up" {
		t.Fatalf("targets: %d %s", code, body)
	}

	victim := before[0]
	syscall.Kill(victim.Pid, syscall.SIGKILL)
	// Prometheus keeps its own instance label (the target) and stores
	// keel's as exported_instance (README: "Prometheus").
	q := fmt.Sprintf(`keel_instance_restarts_total{app="svc",exported_instance="%d",reason="crash"}`, victim.Instance)
	if !poll.Within(30*time.Second, func() bool {
		s := promQuery(t, promAddr, q)
		return len(s) == 1 && s[0].value == "1"
	}) {
		_, targets := get(t, "http://"+promAddr+"/api/v1/targets", "")
		t.Fatalf("Prometheus does not see the crash restart: %+v\ntargets: %s", promQuery(t, promAddr, `keel_instance_restarts_total`), targets)
	}
	if s := promQuery(t, promAddr, `keel_instance_restarts_total{app="svc",reason="manual"}`); len(s) != 2 || s[0].value != "0" {
		t.Fatalf("manual restarts: %+v", s)
	}
	if s := promQuery(t, promAddr, `keel_instance_status{app="svc",status="online"} == 1`); len(s) == 0 {
		t.Fatalf("no online status: %+v", s)
	}
}
