package main

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
)

// spread makes n requests, each on a new connection, and counts the
// answers by body ("pid N"). A request that is not answered within 3s
// fails the test: a connection left on a socket nobody accepts on.
func spread(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 3 * time.Second}
	defer client.CloseIdleConnections()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("request %d of %d: %v (so far %v)", i+1, n, err, got)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		got[strings.TrimSpace(string(body))]++
	}
	return got
}

// New connections spread over every instance, and none goes to an
// instance that was scaled away.
func TestConnectionsSpreadOverTheInstances(t *testing.T) {
	e := newEnv(t)
	e.app("web", "serve", "-i", "3", "--listen", "127.0.0.1:0", "--ready", "notify")
	e.waitFor("3 online", allStatus("web", 3, "online"))
	socks := e.describe("web").Sockets
	if len(socks) != 1 {
		t.Fatalf("sockets %q", socks)
	}
	_, port, _ := net.SplitHostPort(socks[0])
	url := "http://127.0.0.1:" + port + "/"

	got := spread(t, url, 90)
	if len(got) != 3 {
		t.Fatalf("90 connections went to %v, want all 3 instances", got)
	}
	for who, n := range got {
		// 30 each on average; below 12 is a 1-in-100,000 draw.
		if n < 12 {
			t.Fatalf("90 connections went to %v: %s got %d", got, who, n)
		}
	}

	e.ok("scale", "web", "2")
	l := e.waitFor("2 online", func(l []api.Instance) bool { return len(l) == 2 && allStatus("web", 2, "online")(l) })
	got = spread(t, url, 60)
	if len(got) != 2 {
		t.Fatalf("after scaling to 2, 60 connections went to %v", got)
	}
	for _, in := range l {
		if n := got["pid "+strconv.Itoa(in.Pid)]; n < 10 {
			t.Fatalf("after scaling to 2, 60 connections went to %v: instance %d (pid %d) got %d", got, in.Instance, in.Pid, n)
		}
	}
}
