// Command scale measures what managing many instances costs keel and,
// with -pm2, pm2 beside it in the same run (issue 14), and prints one
// table per goal of the issue, keel and pm2 side by side, then every
// figure per row:
//
//	go run ./bench/cmd/scale [-keel path] [-pm2] [-counts 1,4,50,200,1000] [-apps 1,10]
//	        [-reload 100 -reload-serving go,hello] [-log 1000 -log-lines 2000 -log-rate 100 -log-burst 10]
//
// Counts: instances of /bin/sleep, as 1 app and as 10 apps, at each count
// of -counts: the time from the first start command to every instance
// online (beside the time the kernel needs to fork/exec as many /bin/sleep
// directly), the manager's memory — its daemon plus, for keel, every
// keeper: PSS, so shared pages are counted once — per instance, the
// median wall time of the list command (keel ls --json, pm2 jlist), the
// manager's CPU while everything idles, and the time from the first stop
// command (keel stop, pm2 stop, one per app) to every instance stopped.
//
// Reload (-reload N, 0 skips it): an app of N /bin/sleep instances is
// reloaded (keel reload, pm2 reload): the command's wall time, and the
// time until every instance is online in a new process. Then, for each app
// of -reload-serving, N instances serving HTTP on one port are reloaded
// under 32 keep-alive connections of load: the command's wall time, the
// instances replaced, the failed requests.
//
// Lost lines (-log N, 0 skips it): N instances of bench/apps/writer, each
// writing -log-lines numbered lines at -log-rate lines a second once all
// are online; the lines each writer says it wrote against the lines found
// in the manager's log files.
//
// Run it from the module root. Everything it starts is stopped at the end
// of each row, also on error or Ctrl-C. See bench/README.md.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/core"
	"github.com/keel-run/keel/bench/scenario"
)

func main() { os.Exit(run()) }

// options are the command's flags.
type options struct {
	keelBin, pm2Bin string
	withPM2         bool
	counts, layouts []int
	idle            time.Duration
	reload          int
	serving         []string // apps for the reload under load: go, hello
	log             logOptions
}

func run() int {
	var o options
	flag.StringVar(&o.keelBin, "keel", "", "keel binary (default: build ./cmd/keel)")
	flag.BoolVar(&o.withPM2, "pm2", false, "also measure pm2 (installed by bench/install-pm2.sh)")
	flag.StringVar(&o.pm2Bin, "pm2-bin", "", "pm2 binary to use instead of installing one (implies -pm2)")
	countsF := flag.String("counts", "1,4,50,200,1000", `instance counts ("" or 0: none)`)
	appsF := flag.String("apps", "1,10", "layouts: how many apps share the instances")
	// Long enough for clock ticks: /proc counts CPU time in ticks of 10 ms,
	// charged to whoever runs when one falls, so in 5 s a tick was 0.2 %
	// and three keepers charged one each for a moment's work read as 0.6 %.
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "how long the idle CPU is measured")
	flag.IntVar(&o.reload, "reload", 100, "instances of the app that is reloaded (0: no reload row)")
	servingF := flag.String("reload-serving", "go", "apps whose -reload instances are reloaded under HTTP load too: "+
		"go (bench/apps/goapp, keel only: pm2 shares a port only in cluster mode, for Node), hello (bench/apps/hello.js, keel and pm2); \"\": none")
	flag.IntVar(&o.log.instances, "log", 1000, "instances of the log writer (0: no lost-lines row)")
	flag.IntVar(&o.log.lines, "log-lines", 2000, "lines each writer writes")
	flag.IntVar(&o.log.rate, "log-rate", 100, "lines a second each writer writes")
	flag.IntVar(&o.log.burst, "log-burst", 10, "lines a writer writes one after the other (each with a write of its own) per wake-up")
	flag.Parse()
	counts, err1 := ints(*countsF)
	layouts, err2 := ints(*appsF)
	o.counts, o.layouts = counts, layouts
	o.withPM2 = o.withPM2 || o.pm2Bin != ""
	var err3 error
	for f := range strings.SplitSeq(*servingF, ",") {
		switch f = strings.TrimSpace(f); f {
		case "":
		case "go", "hello":
			o.serving = append(o.serving, f)
		default:
			err3 = fmt.Errorf("-reload-serving: unknown app %q", f)
		}
	}
	if err := errors.Join(err1, err2, err3); err != nil || flag.NArg() > 0 || o.idle < time.Second || o.idle > time.Minute ||
		o.reload < 0 || o.log.instances < 0 || o.log.lines < 1 || o.log.rate < 1 || o.log.burst < 1 || o.log.burst > o.log.rate {
		fmt.Fprintln(os.Stderr, "scale: -counts and -apps are lists of positive numbers, -idle in [1s, 1m], -reload and -log ≥ 0, "+
			"-log-lines, -log-rate, -log-burst positive with -log-burst ≤ -log-rate; no arguments:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; everything it started was stopped")
		}
		fmt.Fprintln(os.Stderr, "scale:", err)
		return 1
	}
	return 0
}

func ints(s string) ([]int, error) {
	var out []int
	if s = strings.TrimSpace(s); s == "" || s == "0" {
		return nil, nil
	}
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// manager is one manager under a private home, and its helper processes
// (keel's keepers; nil for pm2).
type manager struct {
	core.Manager
	helpers func() []int
}

// results are every row measured, for the tables.
type results struct {
	withPM2 bool
	counts  []row
	reloads []reloadRow
	serving []servingRow
	logs    []logRow
}

func bench(ctx context.Context, o options) error {
	root, err := core.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "keel-bench-scale-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	keelDesc := o.keelBin
	if o.keelBin == "" {
		o.keelBin = filepath.Join(tmp, "keel")
		if err := core.GoBuild(ctx, root, o.keelBin, "./cmd/keel"); err != nil {
			return err
		}
		keelDesc = "built at " + core.Command("git", "-C", root, "rev-parse", "--short", "HEAD")
	}
	if o.log.instances > 0 {
		o.log.bin = filepath.Join(tmp, "writer")
		if err := core.GoBuild(ctx, root, o.log.bin, "./bench/apps/writer"); err != nil {
			return err
		}
	}
	goBin := filepath.Join(tmp, "goapp")
	if o.reload > 0 && slices.Contains(o.serving, "go") {
		if err := core.GoBuild(ctx, root, goBin, "./bench/apps/goapp"); err != nil {
			return err
		}
	}
	if o.withPM2 && o.pm2Bin == "" {
		out, err := exec.CommandContext(ctx, "sh", filepath.Join(root, "bench/install-pm2.sh")).Output()
		if err != nil {
			return fmt.Errorf("installing pm2: %w", err)
		}
		o.pm2Bin = strings.TrimSpace(string(out))
	}
	fmt.Printf("keel scale bench, %s, %s/%s, %d CPUs, %s, keel %s", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), keelDesc)
	if o.withPM2 {
		fmt.Printf(", pm2 %s, node %s", core.PackageVersion(o.pm2Bin), core.Command("node", "--version"))
	}
	// Go raised this process's soft limit to the hard one and gives its
	// children the one it started with: ask a child.
	fmt.Printf("\nRLIMIT_NOFILE the managers start with: soft %s, hard %s; load average at start %s\n\n",
		core.Command("sh", "-c", "ulimit -Sn"), core.Command("sh", "-c", "ulimit -Hn"),
		core.Command("cut", "-d ", "-f1-3", "/proc/loadavg"))

	newManagers := func() []func() (manager, error) {
		ms := []func() (manager, error){func() (manager, error) {
			k, err := core.NewKeel(o.keelBin)
			if err != nil {
				return manager{}, err
			}
			return manager{k, k.Keepers}, nil
		}}
		if o.withPM2 {
			ms = append(ms, func() (manager, error) {
				p, err := core.NewPM2(o.pm2Bin)
				return manager{Manager: p}, err
			})
		}
		return ms
	}
	// each runs f with a fresh manager of each kind and closes it.
	each := func(what string, f func(m manager)) error {
		for _, mk := range newManagers() {
			m, err := mk()
			if err != nil {
				return err
			}
			f(m)
			if cerr := m.Close(); cerr != nil {
				// Measured all the same; the manager's own kill was
				// slow or left processes (which Close SIGKILLed).
				fmt.Fprintf(os.Stderr, "scale: cleaning up %s after %s: %s\n", m.Name(), what, firstLine(cerr))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	}

	res := results{withPM2: o.withPM2}
	defer func() { res.print(os.Stdout) }()
	for _, n := range o.counts {
		for _, apps := range o.layouts {
			if apps > n || n%apps != 0 {
				continue
			}
			fe, err := forkExec(ctx, n)
			if err != nil {
				return err
			}
			what := fmt.Sprintf("%d instances in %d apps", n, apps)
			err = each(what, func(m manager) {
				r := measure(ctx, m, apps, n, o.idle)
				r.forkExec = fe
				res.counts = append(res.counts, r)
				progress(r.manager, what, r.err, r.String())
			})
			if err != nil {
				return err
			}
		}
	}
	if o.reload > 0 {
		what := fmt.Sprintf("a reload of %d instances", o.reload)
		err := each(what, func(m manager) {
			r := measureReload(ctx, m, o.reload)
			res.reloads = append(res.reloads, r)
			progress(r.manager, what, r.err, r.String())
		})
		if err != nil {
			return err
		}
	}
	if o.reload > 0 {
		apps := scenario.Apps(filepath.Join(root, "bench/apps"), goBin)
		for _, name := range o.serving {
			what := fmt.Sprintf("a reload of %d instances of %s under load", o.reload, name)
			k, err := scenario.NewKeel(o.keelBin)
			if err != nil {
				return err
			}
			k.Timeout = 10 * time.Minute
			ms := []scenario.Manager{k}
			if o.withPM2 && apps[name].Node {
				p, err := scenario.NewPM2(o.pm2Bin)
				if err != nil {
					k.Close()
					return err
				}
				p.Timeout = 10 * time.Minute
				ms = append(ms, p)
			}
			for i, m := range ms {
				if ctx.Err() != nil {
					for _, m := range ms[i:] {
						m.Close()
					}
					return ctx.Err()
				}
				r := measureServing(ctx, m, apps[name], o.reload)
				res.serving = append(res.serving, r)
				progress(r.manager, what, r.err, r.String())
			}
		}
	}
	if o.log.instances > 0 {
		what := fmt.Sprintf("%d log writers", o.log.instances)
		err := each(what, func(m manager) {
			r := measureLogs(ctx, m, o.log, tmp)
			res.logs = append(res.logs, r)
			progress(r.manager, what, r.err, r.String())
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// progress reports a finished row on stderr, so a long run shows its
// figures before the tables.
func progress(manager, what string, err error, figures string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %s, %s: failed: %v\n", manager, what, err)
		return
	}
	fmt.Fprintf(os.Stderr, "scale: %s, %s: %s\n", manager, what, figures)
}

func firstLine(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

func mb(b int64) float64         { return float64(b) / (1 << 20) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// managerPids is the daemon's pid and its helpers'.
func managerPids(m manager) ([]int, error) {
	d, err := m.DaemonPID()
	if err != nil {
		return nil, err
	}
	pids := []int{d}
	if m.helpers != nil {
		pids = append(pids, m.helpers()...)
	}
	return pids, nil
}

// cpuTicks sums utime and stime (clock ticks, 100 a second) of pids.
func cpuTicks(pids []int) int64 {
	var t int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			t += u + s
		}
	}
	return t
}

// cpuPercent is the CPU used between two cpuTicks readings, in % of one
// core.
func cpuPercent(ticks int64, d time.Duration) float64 {
	return float64(ticks) / 100 / d.Seconds() * 100
}

// online counts the instances of ins that are online, and of those, the
// ones whose pid is not in old.
func online(ins []core.Instance, old map[int]bool) (on, fresh int) {
	for _, in := range ins {
		if in.Status == "online" {
			on++
			if !old[in.PID] {
				fresh++
			}
		}
	}
	return on, fresh
}

// waitOnline waits until n instances are online (and, with old, none of
// them is in old) or ctx ends.
func waitOnline(ctx context.Context, m core.Manager, n int, old map[int]bool) error {
	return waitList(ctx, m, func(ins []core.Instance) (bool, string) {
		on, fresh := online(ins, old)
		return on == n && fresh == n, fmt.Sprintf("%d of %d online, %d in new processes", on, n, fresh)
	})
}

// waitAllStopped waits until every instance is stopped, or ctx ends.
func waitAllStopped(ctx context.Context, m core.Manager) error {
	return waitList(ctx, m, func(ins []core.Instance) (bool, string) {
		left := 0
		for _, in := range ins {
			if in.Status != "stopped" {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d not stopped", left)
	})
}

// waitList lists m's instances every 100 ms until done says so, or ctx
// ends (the error then says what done saw last).
func waitList(ctx context.Context, m core.Manager, done func([]core.Instance) (ok bool, state string)) error {
	for {
		ins, err := m.Instances(ctx)
		if err != nil {
			return err
		}
		ok, state := done(ins)
		if ok {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("%s: %w", state, err)
		}
	}
}

// forkExec is how long this process takes to fork/exec n /bin/sleep; they
// are killed and reaped afterwards.
func forkExec(ctx context.Context, n int) (time.Duration, error) {
	cmds := make([]*exec.Cmd, 0, n)
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		c := exec.CommandContext(ctx, "/bin/sleep", "infinity")
		if err := c.Start(); err != nil {
			return 0, fmt.Errorf("fork/exec of /bin/sleep %d: %w", i, err)
		}
		cmds = append(cmds, c)
	}
	return time.Since(t0), nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
