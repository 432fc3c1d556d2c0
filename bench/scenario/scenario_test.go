package scenario

import (
	"context"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/bench/load"
)

func TestMedianMinMax(t *testing.T) {
	for _, c := range []struct {
		xs          []float64
		med, lo, hi float64
	}{
		{nil, 0, 0, 0},
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{-1, -3}, -2, -3, -1},
	} {
		in := append([]float64(nil), c.xs...)
		if m := Median(c.xs); m != c.med {
			t.Errorf("Median(%v) = %v, want %v", c.xs, m, c.med)
		}
		if !reflect.DeepEqual(in, c.xs) && c.xs != nil {
			t.Errorf("Median changed its input: %v", c.xs)
		}
		if lo, hi := MinMax(c.xs); lo != c.lo || hi != c.hi {
			t.Errorf("MinMax(%v) = %v, %v, want %v, %v", c.xs, lo, hi, c.lo, c.hi)
		}
	}
}

func TestReloadTimes(t *testing.T) {
	got := ReloadTimes(9*time.Second, 2)
	want := []time.Duration{3 * time.Second, 6 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReloadTimes(9s, 2) = %v, want %v", got, want)
	}
	if n := len(ReloadTimes(time.Second, 0)); n != 0 {
		t.Errorf("ReloadTimes(1s, 0) has %d times", n)
	}
}

func TestChanged(t *testing.T) {
	for _, c := range []struct {
		before, after []int
		want          int
	}{
		{[]int{10, 11}, []int{20, 21}, 2},
		{[]int{10, 11}, []int{10, 21}, 1},
		{[]int{10, 11}, []int{10, 11}, 0},
		{[]int{10, 0}, []int{20, 21}, 1}, // no process before: not counted
		{[]int{10, 11}, []int{20}, 1},    // shorter list after
		{nil, []int{1}, 0},
	} {
		if got := Changed(c.before, c.after); got != c.want {
			t.Errorf("Changed(%v, %v) = %d, want %d", c.before, c.after, got, c.want)
		}
	}
}

func TestKillTarget(t *testing.T) {
	pids := []int{10, 0, 12, 13}
	for k, want := range []int{10, 12, 12, 13, 10, 12} {
		if got := KillTarget(pids, k); got != want {
			t.Errorf("KillTarget(%v, %d) = %d, want %d", pids, k, got, want)
		}
	}
	if got := KillTarget([]int{0, 0}, 1); got != 0 {
		t.Errorf("KillTarget of no processes = %d", got)
	}
	if got := KillTarget(nil, 3); got != 0 {
		t.Errorf("KillTarget(nil) = %d", got)
	}
}

func TestParseKeelList(t *testing.T) {
	b := []byte(`[{"app":"web","instance":1,"pid":201,"status":"online","restarts":2,"uptime_ms":5,"last_exit":null},
	 {"app":"web","instance":0,"pid":200,"status":"online","restarts":1},
	 {"app":"web","instance":2,"pid":0,"status":"waiting","restarts":3},
	 {"app":"other","instance":0,"pid":300,"status":"online","restarts":9}]`)
	ins, err := ParseKeelList(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := KeelPids(ins, "web", 3); !reflect.DeepEqual(got, []int{200, 201, 0}) {
		t.Errorf("KeelPids = %v", got)
	}
	if got := online(ins, "web"); got != 2 {
		t.Errorf("online = %d, want 2", got)
	}
	if _, err := ParseKeelList([]byte("keel: daemon not running")); err == nil {
		t.Error("ParseKeelList accepted text")
	}
}

func TestParsePM2List(t *testing.T) {
	b := []byte("[PM2] Spawning PM2 daemon\n" +
		`[{"name":"hello","pid":42,"pm_id":1,"pm2_env":{"status":"online","restart_time":2}},` +
		`{"name":"hello","pid":41,"pm_id":0,"pm2_env":{"status":"online","restart_time":1}},` +
		`{"name":"hello","pid":0,"pm_id":2,"pm2_env":{"status":"stopped","restart_time":0}},` +
		`{"name":"x","pid":50,"pm_id":3,"pm2_env":{"status":"online","restart_time":0}}]` + "\n")
	ps, err := ParsePM2List(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := PM2Pids(ps, "hello"); !reflect.DeepEqual(got, []int{41, 42, 0}) {
		t.Errorf("PM2Pids = %v", got)
	}
	if got := pm2Online(ps, "hello"); got != 2 {
		t.Errorf("pm2Online = %d", got)
	}
	if _, err := ParsePM2List([]byte("no json")); err == nil {
		t.Error("ParsePM2List accepted text")
	}
}

func TestStartArgs(t *testing.T) {
	app := App{Name: "go", Script: "/x/goapp", KeelReady: "notify"}
	got := strings.Join(StartArgs(app, 2, 4000), " ")
	want := "start /x/goapp --name go -i 2 --listen 127.0.0.1:4000 --kill-timeout 5s --env PORT=4000 --ready notify"
	if got != want {
		t.Errorf("StartArgs =\n %s\nwant\n %s", got, want)
	}
	node := App{Name: "sigterm", Script: "/x/sigterm.js", Node: true, PM2Args: []string{"--wait-ready"}}
	if got := strings.Join(PM2StartArgs(node, 2), " "); got != "start /x/sigterm.js -i 2 --name sigterm --kill-timeout 5000 --wait-ready" {
		t.Errorf("PM2StartArgs = %s", got)
	}
}

func TestSelect(t *testing.T) {
	cases := Cases(Apps("bench/apps", "/tmp/goapp"), true)
	names := func(cs []Case) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.Name)
		}
		return strings.Join(s, ",")
	}
	for _, c := range []struct{ only, want, unknown string }{
		{"", "reload-sigterm,reload-express,reload-go,kill-hello,kill-go,throughput-hello,crash-crashy,nocrash-crashy", ""},
		{"crashy", "crash-crashy,nocrash-crashy", ""},
		{"go", "reload-go,kill-go", ""},
		{"reload, kill-go", "reload-sigterm,reload-express,reload-go,kill-go", ""},
		{"go,reload-go", "reload-go,kill-go", ""},
		{"throughput,nope", "throughput-hello", "nope"},
	} {
		kept, unknown := Select(cases, c.only)
		if got := names(kept); got != c.want {
			t.Errorf("Select(%q) = %s, want %s", c.only, got, c.want)
		}
		if got := strings.Join(unknown, ","); got != c.unknown {
			t.Errorf("Select(%q) unknown = %s, want %s", c.only, got, c.unknown)
		}
	}
	for _, c := range Cases(Apps("bench/apps", "/tmp/goapp"), false) {
		for _, m := range c.Managers {
			if m == "pm2" {
				t.Errorf("case %s runs pm2 without -pm2", c.Name)
			}
		}
	}
	if NeedsNode(cases[2:3]) {
		t.Error("reload-go needs node")
	}
	if !NeedsNode(cases) {
		t.Error("all cases do not need node")
	}
}

func TestHasEnv(t *testing.T) {
	env := []byte("A=1\x00KEEL_HOME=/tmp/x\x00B=2\x00")
	if !hasEnv(env, "KEEL_HOME=/tmp/x") {
		t.Error("entry not found")
	}
	if hasEnv(env, "KEEL_HOME=/tmp") || hasEnv(env, "KEEL_HOME=/tmp/x2") {
		t.Error("prefix matched")
	}
}

func TestPackageVersion(t *testing.T) {
	if v := PackageVersion([]byte(`{"name":"pm2","version":"7.0.4"}`)); v != "7.0.4" {
		t.Errorf("PackageVersion = %q", v)
	}
	if v := PackageVersion([]byte(`nope`)); v != "?" {
		t.Errorf("PackageVersion(nope) = %q", v)
	}
}

func result(ok int64, failed map[string]int64, rps float64, shares map[string]int64) *load.Result {
	r := &load.Result{OK: ok, Failed: map[string]int64{}, RPS: rps, Instances: shares}
	for _, k := range load.Kinds() {
		r.Failed[k.String()] = failed[k.String()]
	}
	r.Requests = r.OK + r.Failures()
	return r
}

func TestKindsAndSuccess(t *testing.T) {
	a := result(1000, map[string]int64{"reset": 3, "closed": 1}, 1, nil)
	b := result(1000, map[string]int64{"reset": 2, "timeout": 4}, 1, nil)
	if got := Kinds([]*load.Result{a, b}); got != "reset 5, closed 1, timeout 4" {
		t.Errorf("Kinds = %q", got)
	}
	if got := Kinds([]*load.Result{result(5, nil, 1, nil)}); got != "-" {
		t.Errorf("Kinds of none = %q", got)
	}
	if s := Success(a); s != 1000.0/1004 {
		t.Errorf("Success = %v", s)
	}
	if s := Success(&load.Result{}); s != 1 {
		t.Errorf("Success of nothing = %v", s)
	}
}

func TestShareText(t *testing.T) {
	rs := []*load.Result{
		result(100, nil, 1, map[string]int64{"0": 50, "1": 50}),
		result(100, nil, 1, map[string]int64{"0": 40, "1": 60}),
	}
	got, fair := ShareText(rs)
	if got != "0: 40.0–50.0 %, 1: 50.0–60.0 %" || !fair {
		t.Errorf("ShareText = %q, %v", got, fair)
	}
	rs = append(rs, result(100, nil, 1, map[string]int64{"0": 70, "1": 30}))
	if _, fair := ShareText(rs); fair {
		t.Error("a 70/30 split is fair")
	}
	// An instance that served nothing in one run is unfair.
	if _, fair := ShareText([]*load.Result{result(100, nil, 1, map[string]int64{"0": 100}), result(100, nil, 1, map[string]int64{"0": 50, "1": 50})}); fair {
		t.Error("an idle instance is fair")
	}
}

func TestTables(t *testing.T) {
	reload := Spec{Scenario: ScenarioReload, N: 2, Reloads: 2}
	kill := Spec{Scenario: ScenarioKill, N: 4, KillEvery: time.Second}
	specs := map[string]Spec{ScenarioReload: reload, ScenarioKill: kill}
	runs := []*Run{
		{Scenario: ScenarioReload, App: "go", Manager: "keel", Result: result(1000, nil, 100, nil), Ops: 2, Replaced: 4, OpTimes: []time.Duration{time.Second, 3 * time.Second}},
		{Scenario: ScenarioReload, App: "sigterm", Manager: "pm2", Result: result(1000, map[string]int64{"reset": 25}, 90, nil), Ops: 2, Replaced: 4},
		{Scenario: ScenarioReload, App: "go", Manager: "keel", Result: result(3000, nil, 300, nil), Ops: 2, Replaced: 4, OpTimes: []time.Duration{2 * time.Second, 2 * time.Second}},
		{Scenario: ScenarioReload, App: "express", Manager: "keel", Errs: []string{"start: boom"}},
		{Scenario: ScenarioReload, App: "hello", Manager: "keel", Result: result(10, nil, 1, nil), Ops: 2, Replaced: 2},
		{Scenario: ScenarioKill, App: "go", Manager: "keel", Result: result(99_950, map[string]int64{"reset": 50}, 1, nil), Ops: 14, Restarts: 14},
		{Scenario: ScenarioKill, App: "hello", Manager: "keel", Result: result(99_800, map[string]int64{"closed": 200}, 1, nil), Ops: 14, Skipped: 1, Restarts: 14},
	}
	gs := Groups(runs)
	if len(gs) != 6 || len(gs[0].Runs) != 2 {
		t.Fatalf("Groups: %d groups, first has %d runs", len(gs), len(gs[0].Runs))
	}
	for i, want := range []bool{true, false, false, false, true, false} {
		if ok, why := gs[i].Met(specs[gs[i].Scenario]); ok != want {
			t.Errorf("group %s %s %s: met %v (%s), want %v", gs[i].Scenario, gs[i].App, gs[i].Manager, ok, why, want)
		}
	}
	table := LoadTable(gs, specs)
	for _, want := range []string{
		"| reload | go | keel | 2 | 2000 | 0 / 0 | - | 100.000 % | 200 (100–300) | 4 reloads, each 2.00 (1.00–3.00) s, replaced 8/8 | **yes** 0 failed |",
		"| reload | sigterm | pm2 | 1 | 1025 | 25 | reset 25 | 97.561 % | 90 |",
		"**NO**: failed requests",
		"| reload | express | keel | 1 | - | n/a | - | - | - |",
		"**NO**: replaced 2 of 4 instances",
		"| kill | go | keel | 1 | 100000 | 50 | reset 50 | 99.950 % | 1 | 14 kills, restarts 14 | **yes** ≥ 99.9 % |",
		"14 kills (1 hit a restarting slot), restarts 14 | **NO**: 99.800 % < 99.9 % |",
		"- reload express keel, run 1: start: boom",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestThroughputTable(t *testing.T) {
	even := map[string]int64{"0": 50, "1": 50}
	tp := func(m string, rps float64, shares map[string]int64) *Run {
		r := &Run{Scenario: ScenarioThroughput, App: "hello", Manager: m, Result: result(100, nil, rps, shares), Restarts: -1}
		r.Result.Elapsed = 2 * time.Second
		if m == "keel" {
			r.ServerCPU, r.ClientCPU = 2*time.Millisecond, time.Second // 20 µs a request, 0.001 + 0.5 cores
		}
		return r
	}
	runs := []*Run{
		tp("keel", 110, even), tp("node cluster", 100, even), tp("pm2", 80, map[string]int64{"0": 70, "1": 30}), tp("direct", 60, map[string]int64{"0": 100}),
		tp("keel", 90, even), tp("node cluster", 100, even), tp("pm2", 70, even), tp("direct", 50, map[string]int64{"0": 100}),
		tp("keel", 120, even), tp("node cluster", 100, even), tp("pm2", 75, even), tp("direct", 55, map[string]int64{"0": 100}),
	}
	gs := Groups(runs)
	table := ThroughputTable(gs)
	for _, want := range []string{
		"| keel | 3 | 110 (90–120) | 1.83 1.80 2.18 (median 1.83) | 20.0 (20.0–20.0) µs | 0.00 + 0.50 | 0: 50.0 %, 1: 50.0 % | **yes**: keel ÷ node cluster 1.10 0.90 1.20 (median 1.10); keel ÷ pm2 1.38 1.29 1.60 (median 1.38) |",
		"| pm2 | 3 | 75 (70–80) | 1.33 1.40 1.36 (median 1.36) | - | - | 0: 50.0–70.0 %, 1: 30.0–50.0 % | (a share outside 35–65 %) |",
		"| direct | 3 | 55 (50–60) | - | - | - | 0: 100.0 % |  |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if !ThroughputMet(gs) {
		t.Error("ThroughputMet = false")
	}
	// The same-session cluster is a reference row: faster than keel in
	// every run, it is shown but does not fail the target.
	withRef := append([]*Run(nil), runs...)
	for i := 0; i < 3; i++ {
		withRef = append(withRef, tp(SameSessionCluster, 200, even))
	}
	gs = Groups(withRef)
	if !ThroughputMet(gs) {
		t.Error("ThroughputMet = false with a faster same-session reference row")
	}
	if table := ThroughputTable(gs); !strings.Contains(table, "| "+SameSessionCluster+" | 3 | 200 (200–200) | 3.33 4.00 3.64 (median 3.64) | - | - | 0: 50.0 %, 1: 50.0 % | (reference, not a target: shares the load client's CPU group) |") ||
		strings.Contains(table, "keel ÷ "+SameSessionCluster) {
		t.Errorf("reference row wrong:\n%s", table)
	}
	runs[4].Result.RPS, runs[8].Result.RPS = 80, 95 // keel below node cluster in 2 of 3 runs
	if ThroughputMet(Groups(runs)) {
		t.Error("ThroughputMet with keel behind node cluster")
	}
	if !ThroughputMet(nil) {
		t.Error("ThroughputMet without a throughput run")
	}
}

func TestParseStat(t *testing.T) {
	b := []byte("4242 (node (x) y) S 1 4200 4200 0 -1 4194560 2371 0 0 0 123 45 0 0 20 0 11 0 5 0 0\n")
	pgrp, cpu, err := ParseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if pgrp != 4200 || cpu != 168*clockTick {
		t.Errorf("ParseStat = %d, %v; want 4200, %v", pgrp, cpu, 168*clockTick)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2 3", "1 (x) S 1 g 3 0 -1 0 0 0 0 0 1 2"} {
		if _, _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) accepted it", bad)
		}
	}
	// This process: its own group, some CPU.
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc")
	}
	if pg, _, err := ParseStat(self); err != nil || pg != syscall.Getpgrp() {
		t.Errorf("ParseStat(self) = %d, %v; want pgrp %d", pg, err, syscall.Getpgrp())
	}
}

func TestWaitServing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Keel-Instance", []string{"a", "b"}[n.Add(1)%2])
	})}
	go srv.Serve(l)
	defer srv.Close()
	url := "http://" + l.Addr().String() + "/"
	if err := WaitServing(context.Background(), url, 2, 10*time.Second); err != nil {
		t.Errorf("WaitServing(2): %v", err)
	}
	if err := WaitServing(context.Background(), url, 3, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "2 of 3") {
		t.Errorf("WaitServing(3) = %v, want 2 of 3", err)
	}
}

func TestCrashTable(t *testing.T) {
	res := func(failed int64, rps float64, got500, reset int64) *load.Result {
		return &load.Result{Requests: 1000, OK: 1000 - failed, RPS: rps, Failed: map[string]int64{"reset": failed},
			Specials: []load.SpecialResult{{Path: "/throw", Requests: got500 + reset, Status: map[int]int64{500: got500}, Failed: map[string]int64{"reset": reset}}}}
	}
	gs := Groups([]*Run{
		{Scenario: ScenarioCrash, App: "crashy", Manager: "keel", Restarts: 12, Result: res(0, 900, 5, 0),
			CrashGroups: []CrashGroup{{Title: "TypeError: x", Count: 7}, {Title: "Error: y", Count: 5}}},
		{Scenario: ScenarioCrash, App: "crashy", Manager: "pm2", Restarts: 11, Result: res(40, 800, 0, 5)},
		{Scenario: ScenarioNoCrash, App: "crashy", Manager: "keel", Result: res(0, 1000, 0, 0)},
		{Scenario: ScenarioNoCrash, App: "crashy", Manager: "pm2", Result: res(0, 1000, 0, 0)},
	})
	got := CrashTable(gs)
	for _, want := range []string{
		"| crashy | keel | 1 | 1000 | 0 | - | /throw: 500 ×5 | 12 | 900 | 0.90 (1000) | **yes** 0 failed normal requests |",
		"| crashy | pm2 | 1 | 1000 | 40 | reset 40 | /throw: reset 5 | 11 | 800 | 0.80 (1000) | - |",
		`- crashy keel run 1: 12 crashes in 2 groups: "TypeError: x" ×7, "Error: y" ×5`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
