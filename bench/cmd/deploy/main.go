// Command deploy times a deploy from a config file (issue 10) under keel
// and, with -pm2, the same deploy under pm2, and prints them side by side:
//
//	no-op apply  `keel reload keel.yaml --env production` with nothing
//	             changed, median of -noop runs (pm2: `pm2 startOrReload
//	             ecosystem.config.js --env production`, which has no no-op:
//	             it reloads every instance, so its row counts them).
//	reload       the unmodified Express app, 4 instances; the file's
//	             env_production block gets a new value, then the same
//	             command, under 32 keep-alive connections from bench/load
//	             (1 s before, during, 1 s after). -runs reloads, each with
//	             a new value: the median time, the failed requests of every
//	             run, and how many instances each reload replaced.
//
// Run from the repository root:
//
//	go run ./bench/cmd/deploy [-keel path] [-pm2[=path]] [-runs 3] [-noop 10]
//
// -pm2 alone installs pm2 7.0.4 with bench/install-pm2.sh. Every command is
// bounded in time, uses 127.0.0.1 only and stops what it started (keel
// kill, pm2 kill with a private PM2_HOME, SIGKILL of anything left with
// that home), also on error or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/bench/scenario"
)

const instances = 4

func main() { os.Exit(run()) }

type options struct {
	keel, pm2, apps string
	withPM2         bool
	runs, noop      int
	conns           int
}

func run() int {
	var o options
	flag.StringVar(&o.keel, "keel", "", "keel binary (default: build ./cmd/keel)")
	flag.Var(&pm2Flag{o: &o}, "pm2", "also run pm2; -pm2 installs pm2 7.0.4 with bench/install-pm2.sh, -pm2=path uses that binary")
	flag.StringVar(&o.apps, "apps", "bench/apps", "directory of the bench apps")
	flag.IntVar(&o.runs, "runs", 3, "reloads under load per manager")
	flag.IntVar(&o.noop, "noop", 10, "no-op applies per manager")
	flag.IntVar(&o.conns, "c", 32, "load connections")
	flag.Parse()
	if flag.NArg() > 0 || o.runs < 1 || o.runs > 20 || o.noop < 1 || o.noop > 100 {
		fmt.Fprintln(os.Stderr, "deploy: -runs in 1..20, -noop in 1..100, no arguments")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		return 1
	}
	return 0
}

// pm2Flag is -pm2 (install pm2) or -pm2=path.
type pm2Flag struct{ o *options }

func (f *pm2Flag) String() string {
	if f == nil || f.o == nil {
		return ""
	}
	return f.o.pm2
}

func (f *pm2Flag) Set(s string) error {
	f.o.withPM2 = s != "false"
	f.o.pm2 = ""
	if s != "true" && s != "false" {
		f.o.pm2 = s
	}
	return nil
}

func (f *pm2Flag) IsBoolFlag() bool { return true }

// result is one manager's figures.
type result struct {
	name     string
	noop     []time.Duration
	noopRepl []int // instances replaced by each no-op apply
	reload   []time.Duration
	failed   []int64
	requests []int64
	replaced []int
	errs     map[string]string
}

func bench(ctx context.Context, o options) error {
	tmp, err := os.MkdirTemp("", "keel-deploy-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.keel == "" {
		o.keel = filepath.Join(tmp, "keel")
		fmt.Fprintln(os.Stderr, "building keel")
		if _, err := command(ctx, time.Minute, nil, "", "go", "build", "-o", o.keel, "./cmd/keel"); err != nil {
			return err
		}
	}
	expressDir, err := filepath.Abs(filepath.Join(o.apps, "express"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(expressDir, "node_modules", "express")); err != nil {
		fmt.Fprintln(os.Stderr, "installing express into", expressDir)
		if _, err := command(ctx, 5*time.Minute, nil, "", "npm", "install", "--prefix", expressDir, "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"); err != nil {
			return err
		}
	}
	if o.withPM2 && o.pm2 == "" {
		out, err := command(ctx, 5*time.Minute, nil, "", "sh", "bench/install-pm2.sh")
		if err != nil {
			return err
		}
		o.pm2 = strings.TrimSpace(out)
	}
	script := filepath.Join(expressDir, "server.js")
	managers := []manager{&keelManager{bin: o.keel}}
	if o.withPM2 {
		managers = append(managers, &pm2Manager{bin: o.pm2})
	}
	var results []*result
	for _, m := range managers {
		dir := filepath.Join(tmp, m.name()+"-app")
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		r, err := deploy(ctx, m, dir, script, o)
		if cerr := m.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", m.name(), err)
		}
		results = append(results, r)
	}
	fmt.Printf("deploy bench, %s, `go run ./bench/cmd/deploy %s`\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), strings.Join(os.Args[1:], " "))
	fmt.Printf("unmodified Express app, %d instances, %d keep-alive connections during each reload; node %s\n\n", instances, o.conns, strings.TrimSpace(must(command(ctx, 10*time.Second, nil, "", "node", "--version"))))
	fmt.Print(table(results))
	return nil
}

func must(s string, _ error) string { return s }

// deploy starts the app from a file in dir, times the no-op applies, then
// the reloads after an env change under load.
func deploy(ctx context.Context, m manager, dir, script string, o options) (*result, error) {
	port, err := scenario.FreePort()
	if err != nil {
		return nil, err
	}
	r := &result{name: m.name(), errs: map[string]string{}}
	release := 1
	if err := m.write(dir, script, port, release); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "%s: starting %d instances\n", m.name(), instances)
	if err := m.start(ctx, dir); err != nil {
		return nil, err
	}
	if err := scenario.WaitServing(ctx, scenario.URL(port), instances, scenario.StartTimeout); err != nil {
		return nil, err
	}
	for i := 0; i < o.noop; i++ {
		before, err := m.pids(ctx)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := m.apply(ctx, dir); err != nil {
			return nil, err
		}
		r.noop = append(r.noop, time.Since(t0))
		after, err := m.pids(ctx)
		if err != nil {
			return nil, err
		}
		r.noopRepl = append(r.noopRepl, replaced(before, after))
		if err := scenario.WaitServing(ctx, scenario.URL(port), instances, scenario.StartTimeout); err != nil {
			return nil, err
		}
	}
	for i := 0; i < o.runs; i++ {
		release++
		if err := m.write(dir, script, port, release); err != nil {
			return nil, err
		}
		before, err := m.pids(ctx)
		if err != nil {
			return nil, err
		}
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan *load.Result, 1)
		go func() {
			res, _ := load.Run(lctx, load.Config{URL: scenario.URL(port), Conns: o.conns, Duration: 2 * time.Minute})
			done <- res
		}()
		time.Sleep(time.Second) // load before the reload, to see it hold
		t0 := time.Now()
		err = m.apply(ctx, dir)
		took := time.Since(t0)
		if err == nil {
			time.Sleep(time.Second) // and after it
		}
		cancel()
		res := <-done
		if err != nil {
			return nil, err
		}
		after, err := m.pids(ctx)
		if err != nil {
			return nil, err
		}
		r.reload = append(r.reload, took)
		r.replaced = append(r.replaced, replaced(before, after))
		if res != nil {
			r.failed = append(r.failed, res.Failures())
			r.requests = append(r.requests, res.Requests)
			for k, v := range res.Errors {
				if _, ok := r.errs[k]; !ok {
					r.errs[k] = v
				}
			}
		}
		fmt.Fprintf(os.Stderr, "%s reload %d: %v, %d of %d requests failed, replaced %d/%d\n", m.name(), i+1,
			took.Round(time.Millisecond), r.failed[len(r.failed)-1], r.requests[len(r.requests)-1], r.replaced[len(r.replaced)-1], instances)
		if err := scenario.WaitServing(ctx, scenario.URL(port), instances, scenario.StartTimeout); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// replaced counts the pids of before that are not in after.
func replaced(before, after []int) int {
	n := 0
	for _, p := range before {
		if p != 0 && !slices.Contains(after, p) {
			n++
		}
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func span(ds []time.Duration) string {
	return fmt.Sprintf("%v (%v–%v)", ms(median(ds)), ms(slices.Min(ds)), ms(slices.Max(ds)))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func joinInts[T int | int64](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, " / ")
}

func table(rs []*result) string {
	var b strings.Builder
	b.WriteString("| manager | no-op apply, median (min–max) | instances replaced by the no-op | reload of 4 after an env change, median (min–max) | failed requests during each reload | requests during each reload | instances replaced by each reload |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | **%s** | %s | %s |\n", r.name, span(r.noop), joinInts(r.noopRepl),
			span(r.reload), joinInts(r.failed), joinInts(r.requests), joinInts(r.replaced))
	}
	for _, r := range rs {
		for _, k := range slices.Sorted(maps.Keys(r.errs)) {
			fmt.Fprintf(&b, "\n%s, first %s error: %s", r.name, k, r.errs[k])
		}
	}
	b.WriteString("\n")
	return b.String()
}

// manager is keel or pm2, deploying from its own config file.
type manager interface {
	name() string
	// write writes the config file into dir; release is the value of
	// RELEASE in env_production.
	write(dir, script string, port, release int) error
	start(ctx context.Context, dir string) error
	// apply is the deploy command: reload the file with --env production.
	apply(ctx context.Context, dir string) error
	pids(ctx context.Context) ([]int, error)
	close() error
}

type keelManager struct{ bin, home string }

func (k *keelManager) name() string { return "keel" }

func (k *keelManager) env() []string { return append(os.Environ(), "KEEL_HOME="+k.home) }

func (k *keelManager) write(dir, script string, port, release int) error {
	yaml := fmt.Sprintf(`apps:
  - name: express
    script: %s
    instances: %d
    listen: "127.0.0.1:%d"
    kill_timeout: 5s
    env:
      PORT: "%d"
      NODE_ENV: development
    env_production:
      NODE_ENV: production
      RELEASE: "%d"
`, script, instances, port, port, release)
	return os.WriteFile(filepath.Join(dir, "keel.yaml"), []byte(yaml), 0o644)
}

func (k *keelManager) start(ctx context.Context, dir string) error {
	home, err := os.MkdirTemp("", "keel-deploy-home-*")
	if err != nil {
		return err
	}
	k.home = home
	_, err = command(ctx, time.Minute, k.env(), dir, k.bin, "start", "keel.yaml", "--env", "production")
	return err
}

func (k *keelManager) apply(ctx context.Context, dir string) error {
	_, err := command(ctx, 2*time.Minute, k.env(), dir, k.bin, "reload", "keel.yaml", "--env", "production")
	return err
}

func (k *keelManager) pids(ctx context.Context) ([]int, error) {
	out, err := command(ctx, 10*time.Second, k.env(), "", k.bin, "ls", "--json")
	if err != nil {
		return nil, err
	}
	ins, err := scenario.ParseKeelList([]byte(out))
	if err != nil {
		return nil, err
	}
	return scenario.KeelPids(ins, "express", instances), nil
}

func (k *keelManager) close() error {
	if k.home == "" {
		return nil
	}
	_, err := command(context.Background(), 30*time.Second, k.env(), "", k.bin, "kill")
	return errors.Join(err, reap("KEEL_HOME="+k.home), os.RemoveAll(k.home))
}

type pm2Manager struct{ bin, home string }

func (p *pm2Manager) name() string { return "pm2" }

// env gives pm2's daemon SIGTERM as its kill signal, as keel's (pm2's
// default, SIGINT, is not what an app that drains on SIGTERM expects).
func (p *pm2Manager) env() []string {
	return append(os.Environ(), "PM2_HOME="+p.home, "PM2_KILL_SIGNAL=SIGTERM")
}

func (p *pm2Manager) write(dir, script string, port, release int) error {
	js := fmt.Sprintf(`module.exports = {
  apps: [{
    name: 'express',
    script: %q,
    instances: %d,
    exec_mode: 'cluster',
    kill_timeout: 5000,
    env: { PORT: '%d', NODE_ENV: 'development' },
    env_production: { NODE_ENV: 'production', RELEASE: '%d' },
  }],
};
`, script, instances, port, release)
	return os.WriteFile(filepath.Join(dir, "ecosystem.config.js"), []byte(js), 0o644)
}

func (p *pm2Manager) start(ctx context.Context, dir string) error {
	home, err := os.MkdirTemp("", "keel-deploy-pm2-*")
	if err != nil {
		return err
	}
	p.home = home
	_, err = command(ctx, time.Minute, p.env(), dir, p.bin, "start", "ecosystem.config.js", "--env", "production")
	return err
}

func (p *pm2Manager) apply(ctx context.Context, dir string) error {
	_, err := command(ctx, 2*time.Minute, p.env(), dir, p.bin, "startOrReload", "ecosystem.config.js", "--env", "production")
	return err
}

func (p *pm2Manager) pids(ctx context.Context) ([]int, error) {
	out, err := command(ctx, 10*time.Second, p.env(), "", p.bin, "jlist")
	if err != nil {
		return nil, err
	}
	ps, err := scenario.ParsePM2List([]byte(out))
	if err != nil {
		return nil, err
	}
	return scenario.PM2Pids(ps, "express"), nil
}

func (p *pm2Manager) close() error {
	if p.home == "" {
		return nil
	}
	_, err := command(context.Background(), 30*time.Second, p.env(), "", p.bin, "kill")
	return errors.Join(err, reap("PM2_HOME="+p.home), os.RemoveAll(p.home))
}

// command runs name with a bound, in dir, and returns its stdout; the
// error holds its stderr.
func command(ctx context.Context, timeout time.Duration, env []string, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, dir
	cmd.WaitDelay = time.Second
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(errb.String()+" "+out.String()))
	}
	return out.String(), nil
}

// reap SIGKILLs whatever still runs with entry in its environment after a
// manager's own stop, waits (bounded) for it to go, and names it.
func reap(entry string) error {
	deadline := time.Now().Add(5 * time.Second)
	left := scenario.PidsWithEnv(entry)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		left = scenario.PidsWithEnv(entry)
	}
	if len(left) == 0 {
		return nil
	}
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return fmt.Errorf("processes with %s outlived the stop and were SIGKILLed: %v", entry, left)
}
