// Command core measures keel's core (issue 2) and, with -pm2, pm2 beside
// it, with the same 4 apps (a Node http server, a Go program, a python3
// sleep loop, a shell loop) in a private KEEL_HOME / PM2_HOME:
//
//	go run ./bench/cmd/core [-keel path] [-runs 200] [-kills 20] [-crash 30s] [-pm2]
//
// It prints the wall time of `keel ls --json` (pm2 jlist), the daemon's
// RSS (and keel's keepers'), respawn time after SIGKILL against the app's
// own exec-to-main time, and what a crash loop gets under each manager's
// defaults. Run it from the module root. Everything it starts is stopped
// at the end, also on error or Ctrl-C. See bench/README.md.
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
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/keel-run/keel/bench/core"
)

func main() { os.Exit(run()) }

func run() int {
	keelBin := flag.String("keel", "", "keel binary (default: build ./cmd/keel)")
	runs := flag.Int("runs", 200, "runs of the list command (at most 3 minutes)")
	kills := flag.Int("kills", 20, "respawns measured (and direct execs of the probe)")
	crash := flag.Duration("crash", 30*time.Second, "how long to watch the crash loop (at most 10m)")
	withPM2 := flag.Bool("pm2", false, "also measure pm2 (installed by bench/install-pm2.sh)")
	pm2Bin := flag.String("pm2-bin", "", "pm2 binary to use instead of installing one (implies -pm2)")
	flag.Parse()
	if *runs < 1 || *kills < 1 || *crash < 3*time.Second || *crash > 10*time.Minute || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "core: -runs and -kills must be at least 1, -crash in [3s, 10m]; no arguments")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, *keelBin, *pm2Bin, *withPM2 || *pm2Bin != "", core.Config{
		Runs: *runs, Kills: *kills, Crash: *crash, Settle: 2 * time.Second, Samples: 5,
		Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "core: "+f+"\n", a...) },
	}); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; everything it started was stopped")
		}
		fmt.Fprintln(os.Stderr, "core:", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, keelBin, pm2Bin string, withPM2 bool, cfg core.Config) error {
	root, err := core.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "keel-bench-core-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg.Stamp = filepath.Join(tmp, "stamp")
	if err := core.GoBuild(ctx, root, cfg.Stamp, "./bench/core/stamp"); err != nil {
		return err
	}
	keelDesc := keelBin
	if keelBin == "" {
		keelBin = filepath.Join(tmp, "keel")
		if err := core.GoBuild(ctx, root, keelBin, "./cmd/keel"); err != nil {
			return err
		}
		keelDesc = "built at " + core.Command("git", "-C", root, "rev-parse", "--short", "HEAD")
		if core.Command("git", "-C", root, "status", "--porcelain", "--", "cmd", "internal", "go.mod", "go.sum") != "" {
			keelDesc += " with uncommitted changes"
		}
	}
	if cfg.AppDir, err = core.WriteApps(tmp); err != nil {
		return err
	}
	if withPM2 && pm2Bin == "" {
		out, err := exec.CommandContext(ctx, "sh", filepath.Join(root, "bench/install-pm2.sh")).Output()
		if err != nil {
			return fmt.Errorf("installing pm2: %w", err)
		}
		pm2Bin = strings.TrimSpace(string(out))
	}

	k, err := core.NewKeel(keelBin)
	if err != nil {
		return err
	}
	kcfg := cfg
	kcfg.Helpers = k.Keepers
	kr, err := measure(ctx, k, kcfg)
	if err != nil {
		return err
	}
	results := []*core.Result{kr}
	var pm2Version string
	if withPM2 {
		p, err := core.NewPM2(pm2Bin)
		if err != nil {
			return err
		}
		pr, err := measure(ctx, p, cfg)
		if err != nil {
			return err
		}
		results = append(results, pr)
		pm2Version = core.PackageVersion(pm2Bin)
	}
	print(keelDesc, pm2Version, results)
	return nil
}

// measure runs the measurements under m and always closes m.
func measure(ctx context.Context, m core.Manager, cfg core.Config) (res *core.Result, err error) {
	defer func() {
		if cerr := m.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up %s: %w", m.Name(), cerr))
		}
	}()
	return core.Measure(ctx, m, cfg)
}

func print(keelDesc, pm2Version string, rs []*core.Result) {
	fmt.Printf("keel core bench, %s, %s/%s, %d CPUs, %s, node %s, keel %s",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		runtime.Version(), core.Command("node", "--version"), keelDesc)
	if pm2Version != "" {
		fmt.Printf(", pm2 %s", pm2Version)
	}
	fmt.Printf("\nload average %s\n\n", core.Command("cut", "-d ", "-f1-3", "/proc/loadavg"))

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	row := func(label string, f func(r *core.Result) string) {
		fmt.Fprint(w, label)
		for _, r := range rs {
			fmt.Fprint(w, "\t", f(r))
		}
		fmt.Fprintln(w)
	}
	row("", func(r *core.Result) string { return r.Manager })
	row("list (keel ls --json, pm2 jlist): median", func(r *core.Result) string { return core.Ms(r.List.Median) })
	row("  p90 / min / max", func(r *core.Result) string {
		return fmt.Sprintf("%s / %s / %s", core.Ms(r.List.P90), core.Ms(r.List.Min), core.Ms(r.List.Max))
	})
	row("  runs", func(r *core.Result) string { return fmt.Sprint(r.List.N) })
	row("  the CLI alone (keel version, no daemon): median", func(r *core.Result) string {
		if r.Floor.N == 0 {
			return "-"
		}
		return core.Ms(r.Floor.Median)
	})
	row("daemon VmRSS, idle (median of 5; min-max)", func(r *core.Result) string { return daemonRSS(r.Idle) })
	row("daemon VmRSS after the list runs", func(r *core.Result) string { return daemonRSS(r.Busy) })
	row("  of which anonymous; PSS", func(r *core.Result) string { return anonPSS(r.Busy.Daemon) })
	row("keepers (one a process, + standby): VmRSS", func(r *core.Result) string { return keepers(r.Busy) })
	row("  anonymous; PSS (all keepers)", func(r *core.Result) string {
		if len(r.Busy.Helpers) == 0 {
			return "-"
		}
		return anonPSS(r.Busy.HelpersTotal)
	})
	row("daemon + keepers: PSS", func(r *core.Result) string { return core.MB(r.Busy.Daemon.PSS + r.Busy.HelpersTotal.PSS) })
	row("the 4 apps themselves: PSS", func(r *core.Result) string { return core.MB(r.Busy.Apps.PSS) })
	row("respawn, SIGKILL -> new main: median", func(r *core.Result) string { return core.Ms(r.Respawn.Median) })
	row("  p90 / min / max", func(r *core.Result) string {
		return fmt.Sprintf("%s / %s / %s", core.Ms(r.Respawn.P90), core.Ms(r.Respawn.Min), core.Ms(r.Respawn.Max))
	})
	row("  kills", func(r *core.Result) string { return fmt.Sprint(r.Respawn.N) })
	row("probe exec -> main, run directly: median", func(r *core.Result) string { return core.Ms(r.Exec.Median) })
	row("  p90 / min", func(r *core.Result) string {
		return fmt.Sprintf("%s / %s", core.Ms(r.Exec.P90), core.Ms(r.Exec.Min))
	})
	row("own respawn overhead (median - median)", func(r *core.Result) string { return core.Ms(r.Respawn.Median - r.Exec.Median) })
	row("crash loop (exit 1 at once), defaults: restarts in 3 s", func(r *core.Result) string { return fmt.Sprint(r.Crash.Restarts3s) })
	row(fmt.Sprintf("  restarts in %v (last start at)", rs[0].Crash.For), func(r *core.Result) string {
		return fmt.Sprintf("%d (%.1f s)", r.Crash.Restarts, r.Crash.LastStart.Seconds())
	})
	row("  listed at 3 s: status, restarts", func(r *core.Result) string {
		return fmt.Sprintf("%s, %d", r.Crash.Listed3s.Status, r.Crash.Listed3s.Restarts)
	})
	row(fmt.Sprintf("  listed at %v: status, restarts", rs[0].Crash.For), func(r *core.Result) string {
		return fmt.Sprintf("%s, %d", r.Crash.Listed.Status, r.Crash.Listed.Restarts)
	})
	w.Flush()
	for _, r := range rs {
		if r.Crash.Listed.Reason != "" {
			fmt.Printf("\n%s's reason at %v: %s", r.Manager, r.Crash.For, r.Crash.Listed.Reason)
		}
	}
	fmt.Println()
}

func daemonRSS(m core.Memory) string {
	return fmt.Sprintf("%s (%.1f-%.1f)", core.MB(m.Daemon.RSS), float64(m.MinRSS)/(1<<20), float64(m.MaxRSS)/(1<<20))
}

func anonPSS(m core.Mem) string { return core.MB(m.Anon) + "; " + core.MB(m.PSS) }

func keepers(m core.Memory) string {
	if len(m.Helpers) == 0 {
		return "none"
	}
	var each []string
	for _, h := range m.Helpers {
		each = append(each, fmt.Sprintf("%.1f", float64(h.RSS)/(1<<20)))
	}
	return fmt.Sprintf("%s = %s", strings.Join(each, "+"), core.MB(m.HelpersTotal.RSS))
}
