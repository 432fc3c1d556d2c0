// Command scale measures what managing many instances costs keel and,
// with -pm2, pm2 beside it in the same run (issue 14): instances of
// /bin/sleep, as 1 app and as 10 apps, at each count of -counts.
//
//	go run ./bench/cmd/scale [-keel path] [-pm2] [-counts 1,4,50,200,1000] [-apps 1,10]
//
// For each manager, layout and count it prints the time from the first
// start command to every instance online (beside the time the kernel
// needs to fork/exec as many /bin/sleep directly), the manager's memory —
// its daemon plus, for keel, every keeper: PSS, so shared pages are
// counted once — per instance, the median wall time of the list command
// (keel ls --json, pm2 jlist) and the manager's CPU while everything idles.
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
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/keel-run/keel/bench/core"
)

func main() { os.Exit(run()) }

func run() int {
	keelBin := flag.String("keel", "", "keel binary (default: build ./cmd/keel)")
	withPM2 := flag.Bool("pm2", false, "also measure pm2 (installed by bench/install-pm2.sh)")
	pm2Bin := flag.String("pm2-bin", "", "pm2 binary to use instead of installing one (implies -pm2)")
	countsF := flag.String("counts", "1,4,50,200,1000", "instance counts")
	appsF := flag.String("apps", "1,10", "layouts: how many apps share the instances")
	idle := flag.Duration("idle", 5*time.Second, "how long the idle CPU is measured")
	flag.Parse()
	counts, err1 := ints(*countsF)
	layouts, err2 := ints(*appsF)
	if err := errors.Join(err1, err2); err != nil || flag.NArg() > 0 || *idle < time.Second || *idle > time.Minute {
		fmt.Fprintln(os.Stderr, "scale: -counts and -apps are lists of positive numbers, -idle in [1s, 1m]; no arguments:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, *keelBin, *pm2Bin, *withPM2 || *pm2Bin != "", counts, layouts, *idle); err != nil {
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
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// row is one measurement: a manager, a layout, a count.
type row struct {
	manager     string
	apps, count int
	online      time.Duration // first start command → all online
	forkExec    time.Duration // the kernel alone, for as many processes
	mem         core.Mem      // daemon + helpers
	helpers     int
	list        time.Duration // median of the list command
	idleCPU     float64       // % of one core, manager processes only
	err         error
}

func bench(ctx context.Context, keelBin, pm2Bin string, withPM2 bool, counts, layouts []int, idle time.Duration) error {
	root, err := core.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "keel-bench-scale-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	keelDesc := keelBin
	if keelBin == "" {
		keelBin = filepath.Join(tmp, "keel")
		if err := core.GoBuild(ctx, root, keelBin, "./cmd/keel"); err != nil {
			return err
		}
		keelDesc = "built at " + core.Command("git", "-C", root, "rev-parse", "--short", "HEAD")
	}
	if withPM2 && pm2Bin == "" {
		out, err := exec.CommandContext(ctx, "sh", filepath.Join(root, "bench/install-pm2.sh")).Output()
		if err != nil {
			return fmt.Errorf("installing pm2: %w", err)
		}
		pm2Bin = strings.TrimSpace(string(out))
	}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Printf("keel scale bench, %s, %s/%s, %d CPUs, %s, keel %s", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), keelDesc)
	if withPM2 {
		fmt.Printf(", pm2 %s, node %s", core.PackageVersion(pm2Bin), core.Command("node", "--version"))
	}
	fmt.Printf("\nRLIMIT_NOFILE %d/%d; load average %s\n\n", lim.Cur, lim.Max, core.Command("cut", "-d ", "-f1-3", "/proc/loadavg"))

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "instances\tapps\tmanager\tonline s\tfork/exec s\tPSS MB\tPSS KB/inst\tkeepers\tls ms\tidle CPU %\t")
	defer w.Flush()
	for _, n := range counts {
		for _, apps := range layouts {
			if apps > n || n%apps != 0 {
				continue
			}
			fe, err := forkExec(ctx, n)
			if err != nil {
				return err
			}
			managers := []func() (core.Manager, func() []int, error){
				func() (core.Manager, func() []int, error) {
					k, err := core.NewKeel(keelBin)
					if err != nil {
						return nil, nil, err
					}
					return k, k.Keepers, nil
				},
			}
			if withPM2 {
				managers = append(managers, func() (core.Manager, func() []int, error) {
					p, err := core.NewPM2(pm2Bin)
					return p, nil, err
				})
			}
			for _, mk := range managers {
				m, helpers, err := mk()
				if err != nil {
					return err
				}
				r := measure(ctx, m, helpers, apps, n, idle)
				r.forkExec = fe
				if cerr := m.Close(); cerr != nil {
					// Measured all the same; the manager's own kill was
					// slow or left processes (which Close SIGKILLed).
					msg := cerr.Error()
					if i := strings.IndexByte(msg, '\n'); i >= 0 {
						msg = msg[:i]
					}
					fmt.Fprintf(os.Stderr, "scale: cleaning up %s after %d instances: %s\n", r.manager, n, msg)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if r.err != nil {
					msg := r.err.Error()
					if i := strings.IndexByte(msg, '\n'); i >= 0 {
						msg = msg[:i]
					}
					fmt.Fprintf(os.Stderr, "scale: %s, %d apps, %d instances: %s\n", r.manager, apps, n, msg)
					fmt.Fprintf(w, "%d\t%d\t%s\tfailed (see stderr)\t\t\t\t\t\t\t\n", n, apps, r.manager)
				} else {
					fmt.Fprintf(w, "%d\t%d\t%s\t%.2f\t%.2f\t%.1f\t%.0f\t%d\t%.1f\t%.2f\t\n", n, apps, r.manager,
						r.online.Seconds(), r.forkExec.Seconds(), mb(r.mem.PSS), float64(r.mem.PSS)/1024/float64(n),
						r.helpers, ms(r.list), r.idleCPU)
				}
				fmt.Fprintf(os.Stderr, "scale: %s, %d apps, %d instances done\n", r.manager, apps, n)
			}
		}
	}
	return nil
}

func mb(b int64) float64         { return float64(b) / (1 << 20) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measure starts apps apps of n/apps instances each under m and measures
// one row. The caller closes m.
func measure(ctx context.Context, m core.Manager, helpers func() []int, apps, n int, idle time.Duration) row {
	r := row{manager: m.Name(), apps: apps, count: n}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	for i := 0; i < apps; i++ {
		a := core.App{Name: fmt.Sprintf("s%d", i), Script: "/bin/sleep", Interpreter: "none",
			Args: []string{"infinity"}, Instances: n / apps}
		if err := m.Start(ctx, a); err != nil {
			r.err = err
			return r
		}
	}
	if err := waitOnline(ctx, m, n); err != nil {
		r.err = err
		return r
	}
	r.online = time.Since(t0)
	// Let start-up garbage be collected and the standby keeper come.
	if err := sleep(ctx, 3*time.Second); err != nil {
		r.err = err
		return r
	}
	pids, err := managerPids(m, helpers)
	if err != nil {
		r.err = err
		return r
	}
	if helpers != nil {
		r.helpers = len(pids) - 1
	}
	c0 := cpuTicks(pids)
	if err := sleep(ctx, idle); err != nil {
		r.err = err
		return r
	}
	r.idleCPU = float64(cpuTicks(pids)-c0) / 100 / idle.Seconds() * 100
	for _, pid := range pids {
		if s, err := core.ReadMem(pid); err == nil {
			r.mem = r.mem.Add(s)
		}
	}
	lt, _, err := core.ListTimes(ctx, m, 5, time.Minute)
	if err != nil {
		r.err = err
		return r
	}
	r.list = core.Summarize(lt).Median
	return r
}

func managerPids(m core.Manager, helpers func() []int) ([]int, error) {
	d, err := m.DaemonPID()
	if err != nil {
		return nil, err
	}
	pids := []int{d}
	if helpers != nil {
		pids = append(pids, helpers()...)
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

func waitOnline(ctx context.Context, m core.Manager, n int) error {
	for {
		ins, err := m.Instances(ctx)
		if err != nil {
			return err
		}
		online := 0
		for _, in := range ins {
			if in.Status == "online" {
				online++
			}
		}
		if online == n {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("%d of %d online: %w", online, n, err)
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
