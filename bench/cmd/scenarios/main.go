// Command scenarios runs issue 3's bench scenarios against the real keel
// daemon (keel start / reload / ls / kill with a private KEEL_HOME) and,
// with -pm2, the same scenarios against pm2's cluster mode, then prints
// the results as Markdown tables, side by side:
//
//	reload      2 instances, 32 keep-alive connections for 8 s, two reloads
//	            during the run: sigterm.js (handles SIGTERM itself), the
//	            unmodified Express app, the Go app (go-systemd activation).
//	            Target: 0 failed requests.
//	kill        4 instances, one SIGKILLed every second for 15 s under the
//	            same load: hello.js and the Go app. Target: ≥ 99.9 % succeed.
//	throughput  hello.js with 2 instances under keel, Node's cluster module,
//	            pm2's cluster mode and one direct process, interleaved in
//	            each run, with each instance's share. Targets: keel ≥ node
//	            cluster and ≥ pm2; every share 35–65 %.
//	crash       an unmodified Express app (express/crash.js), 4 instances,
//	            32 keep-alive connections for 15 s; one request in 200
//	            throws in a timer, one in 200 leaves a rejection unhandled.
//	            Reports the normal requests that failed (target for keel:
//	            0), what the crashing ones got, restarts, and req/s against
//	            the same load without the crashing requests (nocrash);
//	            for keel also how `keel crashes` filed the crashes.
//
// Run from the repository root:
//
//	go run ./bench/cmd/scenarios [-keel path] [-pm2[=path]] [-only names] [-runs 3]
//
// -pm2 alone installs pm2 7.0.4 with bench/install-pm2.sh; -only takes
// case names (reload-sigterm, reload-express, reload-go, kill-hello,
// kill-go, throughput-hello, crash-crashy, nocrash-crashy), scenarios
// (reload, kill, throughput, crash, nocrash) or apps (sigterm, express,
// go, hello, crashy), comma-separated. Without -keel, keel is
// built from ./cmd/keel. Every run is bounded in time, uses 127.0.0.1 only
// and stops what it started (keel kill, pm2 kill, process groups, temp
// dirs), also on error or Ctrl-C. It exits 1 when a keel row misses its
// target.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/bench/scenario"
)

func main() {
	os.Exit(run())
}

// pm2Flag is -pm2 (install pm2 with bench/install-pm2.sh) or -pm2=path.
type pm2Flag struct {
	on   bool
	path string
}

func (f *pm2Flag) String() string {
	if f == nil || !f.on {
		return ""
	}
	if f.path == "" {
		return "true"
	}
	return f.path
}

func (f *pm2Flag) Set(s string) error {
	switch s {
	case "true":
		f.on, f.path = true, ""
	case "false", "":
		f.on, f.path = false, ""
	default:
		f.on, f.path = true, s
	}
	return nil
}

func (f *pm2Flag) IsBoolFlag() bool { return true }

type options struct {
	keel, apps, only string
	pm2              pm2Flag
	built            bool // keel was built from ./cmd/keel
	runs             int
	conns, connsTP   int
	dReload, dKill   time.Duration
	dTP, dCrash      time.Duration
	noAutogroup      bool
}

func run() int {
	var o options
	flag.StringVar(&o.keel, "keel", "", "keel binary (default: build ./cmd/keel)")
	flag.Var(&o.pm2, "pm2", "also run pm2 where it applies; -pm2 installs pm2 7.0.4 with bench/install-pm2.sh, -pm2=path uses that binary")
	flag.StringVar(&o.only, "only", "", "comma-separated cases, scenarios or apps to run (default: all)")
	flag.StringVar(&o.apps, "apps", "bench/apps", "directory of the bench apps")
	flag.IntVar(&o.runs, "runs", 3, "runs of each case and manager (interleaved); the tables show medians and spread")
	flag.IntVar(&o.conns, "c", 32, "load connections for reload and kill")
	flag.IntVar(&o.connsTP, "c-throughput", 64, "load connections for throughput")
	flag.DurationVar(&o.dReload, "d-reload", 8*time.Second, "load duration of a reload run")
	flag.DurationVar(&o.dKill, "d-kill", 15*time.Second, "load duration of a kill run")
	flag.DurationVar(&o.dTP, "d-throughput", 5*time.Second, "load duration of a throughput run")
	flag.DurationVar(&o.dCrash, "d-crash", 15*time.Second, "load duration of a crash (and nocrash) run")
	flag.BoolVar(&o.noAutogroup, "no-autogroup", false,
		"turn the kernel's per-session CPU grouping off for the run (root; restored after): with the load client on the same "+
			"cores, autogroup favours a server in the client's session over one in a session of its own, which a remote "+
			"client would not see; every compared server runs in a session of its own either way")
	flag.Parse()
	if flag.NArg() > 0 || o.runs < 1 || o.runs > 20 || o.conns < 1 || o.connsTP < 1 {
		fmt.Fprintln(os.Stderr, "scenarios: -runs in 1..20, -c and -c-throughput at least 1, no arguments")
		return 2
	}
	for _, d := range []time.Duration{o.dReload, o.dKill, o.dTP, o.dCrash} {
		if d <= 0 || d > 2*time.Minute {
			fmt.Fprintln(os.Stderr, "scenarios: every -d-… must be in (0, 2m]")
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.noAutogroup {
		restore, err := autogroupOff()
		if err != nil {
			fmt.Fprintln(os.Stderr, "scenarios: -no-autogroup:", err)
			return 1
		}
		defer restore()
	}
	code, err := bench(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scenarios:", err)
		return 1
	}
	return code
}

func bench(ctx context.Context, o options) (int, error) {
	tmp, err := os.MkdirTemp("", "keel-scenarios-*")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)

	goBin := filepath.Join(tmp, "goapp")
	cases, unknown := scenario.Select(scenario.Cases(scenario.Apps(o.apps, goBin), o.pm2.on), o.only)
	if len(unknown) > 0 {
		return 2, fmt.Errorf("-only: no case, scenario or app named %s", strings.Join(unknown, ", "))
	}
	if len(cases) == 0 {
		return 2, errors.New("nothing to run")
	}
	if o.keel == "" {
		o.keel, o.built = filepath.Join(tmp, "keel"), true
		fmt.Fprintln(os.Stderr, "building keel")
		if err := goBuild(ctx, o.keel, "./cmd/keel"); err != nil {
			return 1, err
		}
	}
	for _, c := range cases {
		if c.App.Name == "go" {
			if err := goBuild(ctx, goBin, "./"+filepath.Join(o.apps, "goapp")); err != nil {
				return 1, err
			}
			break
		}
	}
	var node string
	if scenario.NeedsNode(cases) {
		if node, err = exec.LookPath("node"); err != nil {
			return 1, errors.New("node is not installed; run -only go for the Go app alone")
		}
		for _, c := range cases {
			if c.App.Name == "express" || c.App.Name == "crashy" {
				if err := installExpress(ctx, filepath.Join(o.apps, "express")); err != nil {
					return 1, err
				}
				break
			}
		}
	}
	pm2 := o.pm2.path
	if o.pm2.on && pm2 == "" {
		out, err := exec.CommandContext(ctx, "sh", "bench/install-pm2.sh").Output()
		if err != nil {
			return 1, fmt.Errorf("bench/install-pm2.sh: %w", err)
		}
		pm2 = strings.TrimSpace(string(out))
	}
	clusterJS, _ := filepath.Abs(filepath.Join(o.apps, "cluster.js"))
	helloJS, _ := filepath.Abs(filepath.Join(o.apps, "hello.js"))
	newManager := func(name string) (scenario.Manager, error) {
		switch name {
		case "keel":
			return scenario.NewKeel(o.keel)
		case "pm2":
			return scenario.NewPM2(pm2)
		case "node cluster":
			return &scenario.Plain{Label: name, Node: node, Script: clusterJS, Cluster: true, Setsid: true}, nil
		case scenario.SameSessionCluster:
			return &scenario.Plain{Label: name, Node: node, Script: clusterJS, Cluster: true}, nil
		case "direct":
			return &scenario.Plain{Label: name, Node: node, Script: helloJS, Setsid: true}, nil
		}
		return nil, fmt.Errorf("unknown manager %q", name)
	}
	specs := map[string]scenario.Spec{
		scenario.ScenarioReload:     {Scenario: scenario.ScenarioReload, N: 2, Conns: o.conns, D: o.dReload, Reloads: 2},
		scenario.ScenarioKill:       {Scenario: scenario.ScenarioKill, N: 4, Conns: o.conns, D: o.dKill, KillEvery: time.Second},
		scenario.ScenarioThroughput: {Scenario: scenario.ScenarioThroughput, N: 2, Conns: o.connsTP, D: o.dTP},
		scenario.ScenarioCrash: {Scenario: scenario.ScenarioCrash, N: 4, Conns: o.conns, D: o.dCrash,
			Specials: []load.Special{{Path: "/throw", Every: 200}, {Path: "/reject", Every: 200}}},
		scenario.ScenarioNoCrash: {Scenario: scenario.ScenarioNoCrash, N: 4, Conns: o.conns, D: o.dCrash},
	}

	started := time.Now()
	header := describe(o, node, pm2, started)
	fmt.Fprint(os.Stderr, header)
	var runs []*scenario.Run
	for _, c := range cases {
		for i := 1; i <= o.runs; i++ {
			for _, name := range c.Managers {
				if ctx.Err() != nil {
					return 1, ctx.Err()
				}
				m, err := newManager(name)
				if err != nil {
					return 1, err
				}
				r := scenario.Do(ctx, m, c.App, specs[c.Scenario])
				runs = append(runs, r)
				fmt.Fprintf(os.Stderr, "%s %s run %d: %s\n", c.Name, name, i, brief(r))
			}
		}
	}
	if ctx.Err() != nil {
		return 1, ctx.Err()
	}
	groups := scenario.Groups(runs)
	fmt.Print(header)
	fmt.Printf("(took %v)\n\n", time.Since(started).Round(time.Second))
	if t := scenario.LoadTable(groups, specs); strings.Count(t, "\n") > 2 {
		fmt.Println(t)
	}
	if t := scenario.ThroughputTable(groups); t != "" {
		fmt.Println(t)
	}
	if t := scenario.CrashTable(groups); t != "" {
		fmt.Println(t)
	}
	for _, g := range groups {
		if g.Manager != "keel" {
			continue
		}
		if ok, _ := g.Met(specs[g.Scenario]); !ok {
			return 1, nil
		}
	}
	if !scenario.ThroughputMet(groups) {
		return 1, nil
	}
	return 0, nil
}

func brief(r *scenario.Run) string {
	var s string
	if r.Result != nil {
		s = fmt.Sprintf("%d requests, %d failed (%s), %.0f req/s", r.Result.Requests, r.Result.Failures(),
			scenario.Kinds([]*load.Result{r.Result}), r.Result.RPS)
		if len(r.Result.Instances) > 1 {
			sh, _ := scenario.ShareText([]*load.Result{r.Result})
			s += ", shares " + sh + ", connections " + connText(r.Result.ConnInstances)
		}
	}
	if r.Ops > 0 {
		s += fmt.Sprintf(", %d ops", r.Ops)
	}
	for _, e := range r.Errs {
		s += "; error: " + e
	}
	return s
}

// connText is "0: 30, 1: 34": connections by the instance that answered
// them first.
func connText(m map[string]int64) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s: %d", id, m[id])
	}
	return strings.Join(parts, ", ")
}

func goBuild(ctx context.Context, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

func installExpress(ctx context.Context, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "express")); err == nil {
		return nil
	}
	fmt.Fprintln(os.Stderr, "installing express into", dir)
	cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm install express: %w", err)
	}
	return nil
}

// describe is the header: when, what, on what.
func describe(o options, node, pm2 string, at time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "keel bench scenarios, %s, `%s`\n", at.UTC().Format("2006-01-02 15:04 MST"), commandLine())
	parts := []string{output(o.keel, "version")}
	if o.built {
		parts[0] += " built from the working tree"
		if rev := output("git", "rev-parse", "--short", "HEAD"); rev != "?" {
			parts[0] += " at " + rev
		}
	} else {
		parts[0] += " (" + o.keel + ")"
	}
	if node != "" {
		parts = append(parts, "node "+output(node, "--version"))
	}
	if pm2 != "" {
		parts = append(parts, "pm2 "+pm2Version(pm2))
	}
	parts = append(parts, runtime.Version(), fmt.Sprintf("%d CPUs", runtime.NumCPU()))
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		parts = append(parts, "load average "+strings.Join(strings.Fields(string(la))[:3], " "))
	}
	if ag, err := os.ReadFile(autogroupPath); err == nil {
		parts = append(parts, "sched_autogroup_enabled "+strings.TrimSpace(string(ag)))
	}
	fmt.Fprintln(&b, strings.Join(parts, ", "))
	fmt.Fprintf(&b, "reload: 2 instances, %d connections, %v, 2 reloads; kill: 4 instances, %d connections, %v, SIGKILL every 1s; throughput: 2 instances, %d connections, %v; %d runs of each, managers interleaved\n",
		o.conns, o.dReload, o.conns, o.dKill, o.connsTP, o.dTP, o.runs)
	return b.String()
}

func commandLine() string {
	args := append([]string{"go run ./bench/cmd/scenarios"}, os.Args[1:]...)
	return strings.Join(args, " ")
}

func output(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// pm2Version reads the version from pm2's package.json, next to the binary
// (running pm2 --version would start its daemon).
func pm2Version(bin string) string {
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return "?"
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "..", "package.json"))
	if err != nil {
		return "?"
	}
	return scenario.PackageVersion(b)
}

const autogroupPath = "/proc/sys/kernel/sched_autogroup_enabled"

// autogroupOff turns the scheduler's session autogrouping off and returns
// the function that puts back what was there.
func autogroupOff() (func(), error) {
	was, err := os.ReadFile(autogroupPath)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(autogroupPath, []byte("0\n"), 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stderr, "scenarios: sched_autogroup_enabled 0 for this run (was "+strings.TrimSpace(string(was))+")")
	return func() { os.WriteFile(autogroupPath, was, 0o644) }, nil
}
