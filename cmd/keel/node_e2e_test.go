package main

// End-to-end tests of unmodified Node apps under keel: the preload, the
// Node IPC channel and keel's sockets (`listen`, and those bound once per
// app in cluster mode), readiness, rolling reloads under load, crashes,
// logs; and listening sockets that survive a SIGKILL of the daemon.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/nodeipc/nodetest"
)

func requireNode(t *testing.T) { nodetest.Require(t) }

// installExpress installs Express from npm into the shared test cache.
func installExpress(t *testing.T) string { return nodetest.InstallExpress(t) }

// Unmodified servers: nothing in them knows keel. They name their instance
// (pm2's NODE_APP_INSTANCE) in a header so the tests can tell them apart.
const (
	httpApp = `const http = require('http');
http.createServer((req, res) => {
  res.setHeader('X-Keel-Instance', process.env.NODE_APP_INSTANCE);
  res.end('pid ' + process.pid + '\n');
}).listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));
`
	expressApp = `const express = require('express');
const app = express();
app.get('/', (req, res) => {
  res.set('X-Keel-Instance', process.env.NODE_APP_INSTANCE);
  res.send('pid ' + process.pid + '\n');
});
app.listen(process.env.PORT, () => console.log('Example app listening on port ' + process.env.PORT));
`
)

// script writes a Node program into a fresh directory and returns its path.
func script(t *testing.T, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (e *env) describe(app string) api.AppDetail {
	e.t.Helper()
	var det []api.AppDetail
	out := e.ok("describe", app, "--json")
	if err := jsonUnmarshal(out, &det); err != nil || len(det) != 1 {
		e.t.Fatalf("describe %s: %v\n%s", app, err, out)
	}
	return det[0]
}

// fetch makes one request on a new connection and returns the instance
// header and the body.
func fetch(t *testing.T, url string) (string, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %q", url, resp.Status, b)
	}
	return resp.Header.Get("X-Keel-Instance"), string(b)
}

// bothServe asks until both instances answered: a new connection per
// request, so the kernel hands each to whichever instance accepts first.
func bothServe(t *testing.T, url string, pids map[int]bool) {
	t.Helper()
	seen := map[string]bool{}
	for i := 0; i < 1000 && len(seen) < 2; i++ {
		inst, body := fetch(t, url)
		pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(body, "pid ")))
		if !pids[pid] {
			t.Fatalf("answered by pid %d (%q), not an instance of %v", pid, body, pids)
		}
		seen[inst] = true
	}
	if len(seen) != 2 {
		t.Fatalf("instances seen: %v", seen)
	}
}

func pidsOf(l []api.Instance, app string) map[int]bool {
	m := map[int]bool{}
	for _, in := range l {
		if in.App == app {
			m[in.Pid] = true
		}
	}
	return m
}

// TestNodeServersShareOneSocket runs unmodified Node servers as two
// instances on one socket keel owns — named in `listen`, or bound by keel
// on the app's first listen in cluster mode — and reloads them twice under
// load without a failed request.
func TestNodeServersShareOneSocket(t *testing.T) {
	requireNode(t)
	for _, tc := range []struct{ server, mode string }{
		{"http", "listen"}, {"http", "cluster"}, {"express", "listen"}, {"express", "cluster"},
	} {
		t.Run(tc.server+"/"+tc.mode, func(t *testing.T) {
			src, env := httpApp, []string(nil)
			if tc.server == "express" {
				src = expressApp
				env = []string{"--env", "NODE_PATH=" + installExpress(t)}
			}
			e := newEnv(t)
			port := freePort(t)
			path := script(t, "server.js", src)
			args := append([]string{"start", path, "--name", "web", "-i", "2", "--env", "PORT=" + strconv.Itoa(port)}, env...)
			if tc.mode == "listen" {
				args = append(args, "--listen", "127.0.0.1:"+strconv.Itoa(port))
			}
			e.ok(args...)
			l := e.waitFor("2 online", allStatus("web", 2, "online"))

			det := e.describe("web")
			if det.Spec.Ready != "listen" {
				t.Fatalf("ready = %q: want listen, the default for a Node server on keel's sockets", det.Spec.Ready)
			}
			want := "127.0.0.1:" + strconv.Itoa(port)
			if tc.mode == "cluster" {
				want = "[::]:" + strconv.Itoa(port)
			}
			if !slices.Equal(det.Sockets, []string{want}) {
				t.Fatalf("sockets %q, want [%s]", det.Sockets, want)
			}
			url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
			bothServe(t, url, pidsOf(l, "web"))

			res := reloadUnderLoad(t, e, "web", url, 2)
			t.Logf("%s/%s: 2 reloads under 16 connections: %d requests, %d failed (%v), %.0f req/s, shares %v",
				tc.server, tc.mode, res.Requests, res.Failures(), res.Failed, res.RPS, res.Instances)
			if res.Failures() != 0 || res.OK == 0 {
				t.Fatalf("reloads under load: %d ok, failed %v %v", res.OK, res.Failed, res.Errors)
			}
			after := e.waitFor("2 online after the reloads", allStatus("web", 2, "online"))
			for pid := range pidsOf(after, "web") {
				if pidsOf(l, "web")[pid] {
					t.Fatalf("pid %d survived two reloads", pid)
				}
			}
			bothServe(t, url, pidsOf(after, "web"))
		})
	}
}

// reloadUnderLoad reloads app n times while 16 keep-alive connections
// send requests to url, for at least 4 s and until the last reload is
// done, and returns what the load client counted.
func reloadUnderLoad(t *testing.T, e *env, app, url string, n int) *load.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		r   *load.Result
		err error
	}
	done := make(chan outcome, 1)
	start := time.Now()
	go func() {
		r, err := load.Run(ctx, load.Config{URL: url, Conns: 16, Duration: 2 * time.Minute})
		done <- outcome{r, err}
	}()
	for i := 0; i < n; i++ {
		e.ok("reload", app)
	}
	// The measurement window: 4 s, and a moment after the last reload.
	window := time.NewTimer(max(4*time.Second-time.Since(start), 250*time.Millisecond))
	select {
	case <-window.C:
	case o := <-done:
		t.Fatalf("the load ended early: %+v %v", o.r, o.err)
	}
	cancel()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.r
}

// gate is a file the test creates to let a waiting app go on.
const gatedServer = `const fs = require('fs');
const http = require('http');
console.log('waiting ' + process.pid);
const t = setInterval(() => {
  if (!fs.existsSync(process.env.GATE)) return;
  clearInterval(t);
  if (process.env.MODE === 'message') {
    process.send('ready');
    setInterval(() => {}, 1 << 30);
    return;
  }
  http.createServer((req, res) => res.end('ok')).listen(process.env.PORT);
}, 10);
`

// TestNodeOnlineOnlyWhenReady: a Node server in cluster mode is online once
// its server listens (ready: listen, the default), an app with ready:
// message once it calls process.send('ready') — not when it starts.
func TestNodeOnlineOnlyWhenReady(t *testing.T) {
	requireNode(t)
	for _, mode := range []string{"listen", "message"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			gate := filepath.Join(t.TempDir(), "gate")
			args := []string{"start", script(t, "gated.js", gatedServer), "--name", "gated", "-i", "2",
				"--env", "GATE=" + gate, "--env", "MODE=" + mode, "--env", "PORT=" + strconv.Itoa(freePort(t))}
			if mode == "message" {
				args = append(args, "--ready", "message")
			}
			e.ok(args...)
			// Both run (they said so in their logs), and neither is online.
			poll.Until(t, 20*time.Second, "both instances to start", func() bool {
				return strings.Count(e.ok("logs", "gated", "--raw", "--lines", "10"), "waiting ") >= 2
			})
			for _, in := range e.ls() {
				if in.Status != "starting" || in.Pid == 0 || !alive(in.Pid) {
					t.Fatalf("before the app is ready: %+v", in)
				}
			}
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			e.waitFor("2 online", allStatus("gated", 2, "online"))
		})
	}
}

// TestNodeUncaughtExceptionStillCrashes: the preload swallows nothing. An
// exception thrown after the server listens on keel's socket ends the
// process as Node would (exit 1), and keel files it as a node-exception.
func TestNodeUncaughtExceptionStillCrashes(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	src := `const http = require('http');
const server = http.createServer((req, res) => res.end('ok'));
server.listen(0, () => {
  console.log('listening on ' + server.address().port);
  setTimeout(function explode() { throw new TypeError('cannot read the widget ' + process.pid); }, 20);
});
`
	e.ok("start", script(t, "thrower.js", src), "--name", "thrower", "--cluster",
		"--restart-delay", "10ms", "--max-restarts", "2", "--min-uptime", "5s")
	l := e.waitFor("errored", allStatus("thrower", 1, "errored"))
	if ex := l[0].LastExit; ex == nil || ex.Code == nil || *ex.Code != 1 {
		t.Fatalf("last exit %+v, want code 1", l[0].LastExit)
	}
	var groups []api.CrashGroup
	poll.Within(10*time.Second, func() bool {
		if err := jsonUnmarshal(e.ok("crashes", "--json"), &groups); err != nil {
			t.Fatal(err)
		}
		return len(groups) == 1 && groups[0].Count == 3
	})
	if len(groups) != 1 || groups[0].Count != 3 || !strings.Contains(groups[0].Title, "TypeError") {
		t.Fatalf("crash groups %+v, want one TypeError group of 3", groups)
	}
	var det api.CrashDetail
	if err := jsonUnmarshal(e.ok("crash", groups[0].ID, "--json"), &det); err != nil {
		t.Fatal(err)
	}
	if det.Kind != "node-exception" || !strings.Contains(det.LastStack, "explode") {
		t.Fatalf("crash %+v", det)
	}
}

// TestNodeLogsKeepEveryLine: 200,000 lines, then process.exit() at once:
// the preload's blocking stdout loses none.
func TestNodeLogsKeepEveryLine(t *testing.T) {
	requireNode(t)
	for _, code := range []string{"0", "3"} {
		t.Run("exit="+code, func(t *testing.T) {
			e := newEnv(t)
			const n = 200000
			src := `for (let i = 1; i <= ` + strconv.Itoa(n) + `; i++) console.log('line ' + i);
process.exit(` + code + `);
`
			e.ok("start", script(t, "printer.js", src), "--name", "printer", "--restart", "never")
			want := "stopped"
			if code != "0" {
				want = "errored"
			}
			l := e.waitFor(want, func(l []api.Instance) bool {
				return len(l) == 1 && l[0].LastExit != nil && (l[0].Status == "stopped" || l[0].Status == "errored")
			})
			if ex := l[0].LastExit; ex.Code == nil || strconv.Itoa(*ex.Code) != code {
				t.Fatalf("exit %+v, want code %s", ex, code)
			}
			out := e.ok("logs", "printer", "--raw", "--lines", strconv.Itoa(n+10))
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != n {
				t.Fatalf("got %d lines, want %d", len(lines), n)
			}
			for i, l := range lines {
				if l != "line "+strconv.Itoa(i+1) {
					t.Fatalf("line %d is %q", i+1, l)
				}
			}
		})
	}
}

// TestSocketsSurviveADaemonCrash: SIGKILL of the daemon, then of one
// instance; the next command brings a daemon back, which takes the
// listening socket back from the surviving keepers instead of binding the
// port again. The restarted instance serves on the same socket, and no
// connection is refused meanwhile. Deleting the app then closes it.
func TestSocketsSurviveADaemonCrash(t *testing.T) {
	for _, mode := range []string{"listen", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			if mode == "listen" {
				// A Go server on fd 3 (LISTEN_FDS), on a port the kernel picked.
				e.app("web", "serve", "-i", "2", "--listen", "127.0.0.1:0", "--ready", "notify")
			} else {
				// An unmodified Node server listening on port 0 in cluster
				// mode: keel binds a free port once and shares it.
				requireNode(t)
				e.ok("start", script(t, "server.js", httpApp), "--name", "web", "-i", "2", "--env", "PORT=0")
			}
			before := e.waitFor("2 online", allStatus("web", 2, "online"))
			socks := e.describe("web").Sockets
			if len(socks) != 1 {
				t.Fatalf("sockets %q", socks)
			}
			_, port, _ := net.SplitHostPort(socks[0])
			url := "http://127.0.0.1:" + port + "/"

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan *load.Result, 1)
			go func() {
				r, _ := load.Run(ctx, load.Config{URL: url, Conns: 8, Duration: 2 * time.Minute})
				done <- r
			}()

			e.killDaemon()
			victim := before[1]
			syscall.Kill(victim.Pid, syscall.SIGKILL)
			poll.Until(t, 10*time.Second, "the victim to die", func() bool { return !alive(victim.Pid) })
			// Served meanwhile by the surviving instance: with no daemon,
			// the victim's keeper steers new connections to it. (One that
			// reached the victim's own socket in the instant before waits
			// there for the restart.)
			quick := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
			get := func() error {
				resp, err := quick.Get(url)
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %s", resp.Status)
				}
				return nil
			}
			poll.Until(t, 10*time.Second, "the victim's keeper to steer new connections away", func() bool {
				logs, _ := filepath.Glob(filepath.Join(e.home, "run", "*.log"))
				for _, l := range logs {
					if b, _ := os.ReadFile(l); bytes.Contains(b, []byte("new connections go to the other instances")) {
						return true
					}
				}
				return false
			})
			for i := 0; i < 20; i++ {
				if err := get(); err != nil {
					t.Fatalf("with no daemon, new connection %d after the victim's death: %v", i+1, err)
				}
			}

			after := e.waitFor("2 online after recovery", allStatus("web", 2, "online"))
			if got := e.describe("web").Sockets; !slices.Equal(got, socks) {
				t.Fatalf("sockets after recovery %q, before %q", got, socks)
			}
			var reborn api.Instance
			for _, in := range after {
				if in.Instance == victim.Instance {
					reborn = in
				}
			}
			if reborn.Pid == victim.Pid || !alive(reborn.Pid) {
				t.Fatalf("instance %d not restarted: %+v", victim.Instance, reborn)
			}
			// The restarted instance accepts on the same socket.
			served := false
			for i := 0; i < 1000 && !served; i++ {
				_, body := fetch(t, url)
				served = strings.TrimSpace(body) == fmt.Sprintf("pid %d", reborn.Pid)
			}
			if !served {
				t.Fatalf("the restarted instance (pid %d) never answered on %s", reborn.Pid, url)
			}
			cancel()
			r := <-done
			t.Logf("%s: %d requests through the daemon's crash and an instance's death: %d ok, failed %v",
				mode, r.Requests, r.OK, r.Failed)
			if r.Failed["refused"] != 0 || r.OK == 0 {
				t.Fatalf("%d ok, failed %v %v", r.OK, r.Failed, r.Errors)
			}

			// The socket lives as long as the app.
			// (Its keepers, released, close their copies as they exit.)
			e.ok("delete", "web")
			poll.Until(t, 20*time.Second, "port "+port+" to refuse after the app was deleted", func() bool {
				c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 5*time.Second)
				if c != nil {
					c.Close()
				}
				return errors.Is(err, syscall.ECONNREFUSED)
			})
		})
	}
}

// A plain `keel start server.js`: one instance, no --listen. Its port is
// still keel's socket, so it scales to two instances sharing it, and a
// reload is rolling with no request lost.
func TestNodeSingleInstanceScalesAndReloads(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	port := freePort(t)
	path := script(t, "server.js", httpApp)
	e.ok("start", path, "--name", "solo", "--ready", "listen", "--env", "PORT="+strconv.Itoa(port))
	e.waitFor("online", allStatus("solo", 1, "online"))
	e.ok("scale", "solo", "2")
	l := e.waitFor("2 online", allStatus("solo", 2, "online"))
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	bothServe(t, url, pidsOf(l, "solo"))
	res := reloadUnderLoad(t, e, "solo", url, 2)
	t.Logf("2 reloads under 16 connections: %d requests, %d failed (%v)", res.Requests, res.Failures(), res.Failed)
	if res.Failures() != 0 || res.OK == 0 {
		t.Fatalf("reloads under load: %d ok, failed %v %v", res.OK, res.Failed, res.Errors)
	}
}
