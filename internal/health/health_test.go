package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// probes serves c on a loopback port and returns a function that asks it.
func probes(t *testing.T, c *health.Checker) func(method, path string) (int, map[string]any) {
	t.Helper()
	ln, err := health.Listen("127.0.0.1:0")
	require.NoError(t, err)
	srv := c.Server()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return func(method, path string) (int, map[string]any) {
		req, err := http.NewRequest(method, "http://"+ln.Addr().String()+path, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var m map[string]any
		if method != "HEAD" {
			require.NoError(t, json.Unmarshal(b, &m), "%s", b)
		} else {
			require.Empty(t, b)
		}
		return resp.StatusCode, m
	}
}

func TestProbes(t *testing.T) {
	var mu sync.Mutex
	apps := []health.App{{Name: "web", Ready: 1, Need: 2, Why: "web:1 waiting: exited with code 1"}, {Name: "worker", Ready: 1, Need: 1, ReadyOnce: true}}
	var srcErr error
	stopping := make(chan struct{})
	get := probes(t, &health.Checker{Stopping: stopping, Source: func(context.Context) ([]health.App, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(apps), srcErr
	}})

	code, body := get("GET", "/readyz")
	require.Equal(t, 503, code)
	require.Equal(t, "not ready", body["status"])
	short := body["apps"].([]any)
	require.Len(t, short, 1, "only the app that holds readiness back")
	require.Equal(t, map[string]any{"app": "web", "ready": 1.0, "need": 2.0, "why": "web:1 waiting: exited with code 1"}, short[0])
	code, body = get("GET", "/startupz")
	require.Equal(t, 503, code)
	require.Equal(t, "starting", body["status"])
	code, _ = get("GET", "/livez")
	require.Equal(t, 200, code)

	mu.Lock()
	apps[0].Ready, apps[0].ReadyOnce = 2, true
	mu.Unlock()
	code, body = get("GET", "/readyz")
	require.Equal(t, 200, code)
	require.Equal(t, map[string]any{"status": "ready"}, body)
	code, _ = get("GET", "/startupz")
	require.Equal(t, 200, code)
	code, _ = get("HEAD", "/readyz")
	require.Equal(t, 200, code)

	mu.Lock()
	apps[0].Ready = 1 // a crash after startup: not ready, still started
	mu.Unlock()
	code, _ = get("GET", "/readyz")
	require.Equal(t, 503, code)
	code, _ = get("GET", "/startupz")
	require.Equal(t, 200, code)

	mu.Lock()
	apps[0].Ready = 2
	mu.Unlock()
	close(stopping)
	code, body = get("GET", "/readyz")
	require.Equal(t, 503, code, "the shutdown has begun")
	require.Equal(t, "stopping", body["status"])
	code, _ = get("GET", "/livez")
	require.Equal(t, 200, code, "alive while it drains")

	mu.Lock()
	srcErr = errors.New("supervisor is shut down")
	mu.Unlock()
	code, body = get("GET", "/livez")
	require.Equal(t, 503, code)
	require.Equal(t, "supervisor is shut down", body["error"])

	code, _ = get("GET", "/metrics")
	require.Equal(t, 404, code)
	code, _ = get("POST", "/readyz")
	require.Equal(t, 405, code)
}
