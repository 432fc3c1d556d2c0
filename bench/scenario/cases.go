package scenario

import (
	"path/filepath"
	"strings"
)

// Case is one scenario with one app, run under each of its managers.
type Case struct {
	// Name is scenario-app, e.g. "reload-express"; -only selects by it, by
	// the scenario or by the app.
	Name     string
	Scenario string
	App      App
	// Managers names the managers that run it, in order: "keel", "pm2",
	// "node cluster", SameSessionCluster, "direct".
	Managers []string
}

// SameSessionCluster is Node's cluster module started in the load
// client's own session. Every other server runs in a session of its own,
// as a daemon's children do and as a server started from another terminal
// does; with the kernel's scheduler autogroups (one CPU group per session)
// a server sharing the client's session shares its CPU group, which on a
// box where client and servers share the cores is worth a third more
// req/s to whatever server it is. So this row is shown for reference and
// is not a target.
const SameSessionCluster = "node cluster, in the load client's session"

// Apps are the bench apps under dir (bench/apps); goBin is the built Go
// app.
func Apps(dir, goBin string) map[string]App {
	abs := func(p string) string {
		a, err := filepath.Abs(filepath.Join(dir, p))
		if err != nil {
			return filepath.Join(dir, p)
		}
		return a
	}
	return map[string]App{
		// Handles SIGTERM itself, takes fd 3 (LISTEN_FDS) and says
		// process.send('ready').
		"sigterm": {Name: "sigterm", Script: abs("sigterm.js"), Node: true, KeelReady: "message",
			PM2Args: []string{"--wait-ready", "--listen-timeout", "10000"}},
		// Unmodified: app.listen(PORT); keel's preload routes it.
		"express": {Name: "express", Script: abs("express/server.js"), Node: true},
		"hello":   {Name: "hello", Script: abs("hello.js"), Node: true},
		// Unmodified, with a route that throws in a timer and one that
		// leaves a rejection unhandled. Under a crash every few hundred
		// milliseconds no run is stable by the defaults (min_uptime 1s), and
		// both managers would give up on the app within the run: pm2 gets
		// max_restarts 10000 (it restarts at once, with no backoff; its CLI
		// has no min_uptime), keel the same and min_uptime 100ms, so that
		// it restarts at once too.
		"crashy": {Name: "crashy", Script: abs("express/crash.js"), Node: true,
			KeelArgs: []string{"--min-uptime", "100ms", "--max-restarts", "10000"},
			PM2Args:  []string{"--max-restarts", "10000"}},
		// go-systemd activation, READY=1 on NOTIFY_SOCKET.
		"go": {Name: "go", Script: goBin, KeelReady: "notify"},
	}
}

// Cases are every scenario of issue 3, in the order they run and print.
// withPM2 adds pm2 where it applies (Node apps).
func Cases(apps map[string]App, withPM2 bool) []Case {
	both := []string{"keel"}
	if withPM2 {
		both = append(both, "pm2")
	}
	tp := []string{"keel", "node cluster", SameSessionCluster}
	if withPM2 {
		tp = append(tp, "pm2")
	}
	tp = append(tp, "direct")
	return []Case{
		{Name: "reload-sigterm", Scenario: ScenarioReload, App: apps["sigterm"], Managers: both},
		{Name: "reload-express", Scenario: ScenarioReload, App: apps["express"], Managers: both},
		{Name: "reload-go", Scenario: ScenarioReload, App: apps["go"], Managers: []string{"keel"}},
		{Name: "kill-hello", Scenario: ScenarioKill, App: apps["hello"], Managers: both},
		{Name: "kill-go", Scenario: ScenarioKill, App: apps["go"], Managers: []string{"keel"}},
		{Name: "throughput-hello", Scenario: ScenarioThroughput, App: apps["hello"], Managers: tp},
		{Name: "crash-crashy", Scenario: ScenarioCrash, App: apps["crashy"], Managers: both},
		{Name: "nocrash-crashy", Scenario: ScenarioNoCrash, App: apps["crashy"], Managers: both},
	}
}

// Select keeps the cases that only names (comma-separated case names,
// scenarios or apps; empty: all) selects, and reports names that select
// nothing.
func Select(cases []Case, only string) (kept []Case, unknown []string) {
	if strings.TrimSpace(only) == "" {
		return cases, nil
	}
	var names []string
	for _, n := range strings.Split(only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	used := map[string]bool{}
	for _, c := range cases {
		keep := false
		for _, n := range names {
			if n == c.Name || n == c.Scenario || n == c.App.Name {
				keep = true
				used[n] = true
			}
		}
		if keep {
			kept = append(kept, c)
		}
	}
	for _, n := range names {
		if !used[n] {
			unknown = append(unknown, n)
		}
	}
	return kept, unknown
}

// NeedsNode reports whether any selected case runs node.
func NeedsNode(cases []Case) bool {
	for _, c := range cases {
		if c.App.Node {
			return true
		}
	}
	return false
}
