package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"github.com/keel-run/keel/internal/api"
)

// keel's Go library under keel: serve takes keel's socket and reports
// READY=1; a panic in a scope goroutine answers that request 500, the
// instance drains and exits non-zero, keel starts a clean one while the
// other serves, and the crash is grouped as the Go panic it was.
func TestGuardedServiceUnderKeel(t *testing.T) {
	e := newEnv(t)
	e.app("lib", "guarded", "-i", "2", "--listen", "127.0.0.1:0", "--ready", "notify")
	e.waitFor("2 online", allStatus("lib", 2, "online"))
	var det []api.AppDetail
	if err := jsonUnmarshal(e.ok("describe", "lib", "--json"), &det); err != nil || len(det[0].Sockets) != 1 {
		t.Fatalf("describe: %v %+v", err, det)
	}
	base := "http://" + det[0].Sockets[0]
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	resp, err := client.Get(base + "/panic")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("panic request: %d %s", resp.StatusCode, body)
	}
	// Meanwhile and afterwards, every request is served.
	for i := 0; i < 50; i++ {
		r, err := client.Get(base + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, r.StatusCode)
		}
	}
	e.waitFor("a clean replacement", func(l []api.Instance) bool {
		restarted := 0
		for _, in := range l {
			if in.Status == "online" && in.Restarts == 1 && in.LastExit != nil && in.LastExit.Code != nil && *in.LastExit.Code == 1 {
				restarted++
			}
		}
		return restarted == 1 && allStatus("lib", 2, "online")(l)
	})
	var groups []api.CrashGroup
	poll.Within(10*time.Second, func() bool {
		if err := jsonUnmarshal(e.ok("crashes", "lib", "--json"), &groups); err != nil {
			t.Fatal(err)
		}
		return len(groups) > 0
	})
	if len(groups) != 1 || !strings.HasPrefix(groups[0].Title, "panic: assignment to entry in nil map") {
		t.Fatalf("crash groups: %+v", groups)
	}
}
