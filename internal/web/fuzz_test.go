package web

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/metrics"
	"github.com/keel-run/keel/internal/spec"
)

const fuzzToken = "00112233445566778899aabbccddeeff"

// countingBackend answers everything and counts the actions that reached
// it.
type countingBackend struct{ actions int }

func (b *countingBackend) List(context.Context) ([]api.Instance, error) {
	return []api.Instance{{App: "secret-app", Status: "online"}}, nil
}
func (b *countingBackend) Crashes(context.Context, string) ([]api.CrashGroup, error) { return nil, nil }
func (b *countingBackend) act() (api.Result, error)                                  { b.actions++; return api.Result{}, nil }
func (b *countingBackend) Stop(context.Context, spec.Target) (api.Result, error)     { return b.act() }
func (b *countingBackend) Restart(context.Context, spec.Target) (api.Result, error)  { return b.act() }
func (b *countingBackend) Reload(context.Context, spec.Target) (api.Result, error)   { return b.act() }
func (b *countingBackend) StartStopped(context.Context, spec.Target) (api.Result, error) {
	return b.act()
}
func (b *countingBackend) Scale(context.Context, string, int) (api.Result, error) { return b.act() }
func (b *countingBackend) WriteMetrics(_ context.Context, w io.Writer, f metrics.Format) error {
	return metrics.Write(w, &metrics.Snapshot{}, f)
}
func (b *countingBackend) FollowLogs(context.Context, io.Writer, spec.Target, int) error { return nil }

// FuzzRoute reads any bytes as a request and routes it: no panic, a
// known status, and without the token no data and no action.
func FuzzRoute(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
		"GET /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fuzzToken + "\r\n\r\n",
		"GET /api/logs?app=web:1&lines=5 HTTP/1.1\r\nHost: x\r\nX-Keel-Token: " + fuzzToken + "\r\n\r\n",
		"POST /api/action HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fuzzToken + "\r\nContent-Length: 40\r\n\r\n{\"action\":\"scale\",\"target\":\"a\",\"instances\":2}",
		"POST /api/action HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
		"GET /assets/../web.go HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /api/state HTTP/1.1\r\nHost: x\r\nAuthorization: bearer " + fuzzToken[:31] + "\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http1.ReadRequest(bufio.NewReader(bytes.NewReader(raw)), 16<<10, 64<<10)
		if err != nil {
			return
		}
		b := &countingBackend{}
		s := &Server{b: b, token: []byte(fuzzToken), hist: newHistory()}
		w := &http1.ResponseWriter{}
		s.handle(w, req)
		code := w.Status()
		if code == 0 {
			code = 200 // unset: a streamed answer
		}
		switch code {
		case 200, 400, 401, 404, 405:
		default:
			t.Fatalf("status %d for %q", code, raw)
		}
		authed := s.authorized(req)
		if strings.HasPrefix(req.URL.Path, "/api/") && !authed {
			if code != 401 {
				t.Fatalf("status %d without the token for %q", code, raw)
			}
			if b.actions != 0 {
				t.Fatalf("an action ran without the token: %q", raw)
			}
		}
	})
}
