// Command web measures what the web listener (keel web, issue 12) costs
// the daemon, with one or two keel binaries in private KEEL_HOMEs:
//
//		go run ./bench/cmd/web [-keel path] [-base path] [-instances 200] [-scrapes 200] [-browse 20s]
//
//	 1. RSS with the listener off: the daemon's VmRSS, idle with 3 small apps,
//	    median of 5 samples, for -keel and (if given) -base, a keel built
//	    without the listener; then after 200 `keel ls`, and the ls wall time.
//	 2. RSS with the listener on and a browser attached: headless Chromium
//	    (Debian's chromium) keeps the dashboard open for -browse while the
//	    daemon is sampled; the figure is the rise over the idle RSS.
//	 3. A /metrics scrape with -instances instances (20 apps): the daemon's
//	    CPU time per scrape (utime+stime over -scrapes scrapes, from
//	    /proc/<pid>/stat) and the wall time of each.
//
// Everything runs on 127.0.0.1 and is stopped at the end. Run it from the
// module root.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/core"
)

func main() { os.Exit(run()) }

func run() int {
	keelBin := flag.String("keel", "", "keel binary (default: build ./cmd/keel)")
	baseBin := flag.String("base", "", "a keel binary without the web listener, for the listener-off comparison")
	instances := flag.Int("instances", 200, "instances for the scrape measurement (a multiple of 20)")
	scrapes := flag.Int("scrapes", 200, "scrapes measured")
	browse := flag.Duration("browse", 20*time.Second, "how long the browser keeps the dashboard open (at most 5m)")
	flag.Parse()
	if *instances < 20 || *instances%20 != 0 || *scrapes < 1 || *browse <= 0 || *browse > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "web: -instances a multiple of 20, -scrapes ≥ 1, -browse in (0, 5m]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	if err := bench(ctx, *keelBin, *baseBin, *instances, *scrapes, *browse); err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		return 1
	}
	return 0
}

func logf(f string, a ...any) { fmt.Fprintf(os.Stderr, "web: "+f+"\n", a...) }

func bench(ctx context.Context, keelBin, baseBin string, instances, scrapes int, browse time.Duration) error {
	tmp, err := os.MkdirTemp("", "keel-bench-web-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if keelBin == "" {
		keelBin = filepath.Join(tmp, "keel")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", keelBin, "./cmd/keel")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building keel: %w", err)
		}
	}
	fmt.Println("## listener off: daemon VmRSS (3 apps, median of 5) and keel ls")
	fmt.Printf("%-10s %-12s %-16s %s\n", "binary", "idle RSS", "RSS after 200 ls", "ls median (p90)")
	bins := [][2]string{{"keel", keelBin}}
	if baseBin != "" {
		bins = append(bins, [2]string{"base", baseBin})
	}
	for _, b := range bins {
		idle, after, med, p90, err := offRSS(ctx, tmp, b[1])
		if err != nil {
			return fmt.Errorf("%s: %w", b[0], err)
		}
		fmt.Printf("%-10s %-12s %-16s %s (%s)\n", b[0], core.MB(idle), core.MB(after), med, p90)
	}

	fmt.Println("\n## listener on, a browser attached")
	if err := onRSS(ctx, tmp, keelBin, browse); err != nil {
		return err
	}

	fmt.Printf("\n## /metrics with %d instances\n", instances)
	return scrapeCost(ctx, tmp, keelBin, instances, scrapes)
}

// home is one private KEEL_HOME with a daemon of bin.
type home struct {
	bin, dir string
}

func newHome(tmp, bin, name string) (*home, error) {
	dir := filepath.Join(tmp, name)
	return &home{bin: bin, dir: dir}, os.MkdirAll(dir, 0o700)
}

func (h *home) keel(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(), "KEEL_HOME="+h.dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("keel %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (h *home) kill() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h.keel(ctx, "kill")
}

func (h *home) pid() (int, error) {
	b, err := os.ReadFile(filepath.Join(h.dir, "daemon.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// startApps starts apps×n sleepers from a config file and waits until
// every one is online.
func (h *home) startApps(ctx context.Context, apps, n int) error {
	var cfg strings.Builder
	cfg.WriteString("apps:\n")
	for a := range apps {
		fmt.Fprintf(&cfg, "  - name: app%02d\n    script: /bin/sleep\n    args: \"3600\"\n    instances: %d\n", a, n)
	}
	path := filepath.Join(h.dir, "bench.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	if _, err := h.keel(ctx, "start", path); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := h.keel(ctx, "ls", "--json")
		if err != nil {
			return err
		}
		var l []struct{ Status string }
		json.Unmarshal([]byte(out), &l)
		online := 0
		for _, in := range l {
			if in.Status == "online" {
				online++
			}
		}
		if online == apps*n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d instances online after 2 minutes", online, apps*n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func rssSamples(pid, n int, every time.Duration) (median int64, err error) {
	var s []int64
	for i := range n {
		if i > 0 {
			time.Sleep(every)
		}
		m, err := core.ReadMem(pid)
		if err != nil {
			return 0, err
		}
		s = append(s, m.RSS)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], nil
}

func offRSS(ctx context.Context, tmp, bin string) (idle, after int64, med, p90 time.Duration, err error) {
	h, err := newHome(tmp, bin, "off-"+filepath.Base(bin)+strconv.Itoa(int(time.Now().UnixNano()%1000)))
	if err != nil {
		return
	}
	defer h.kill()
	if err = h.startApps(ctx, 3, 1); err != nil {
		return
	}
	pid, err := h.pid()
	if err != nil {
		return
	}
	time.Sleep(2 * time.Second)
	if idle, err = rssSamples(pid, 5, 200*time.Millisecond); err != nil {
		return
	}
	var ls []time.Duration
	for range 200 {
		t0 := time.Now()
		if _, err = h.keel(ctx, "ls", "--json"); err != nil {
			return
		}
		ls = append(ls, time.Since(t0))
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	after, err = rssSamples(pid, 5, 200*time.Millisecond)
	return idle, after, ls[len(ls)/2].Round(10 * time.Microsecond), ls[len(ls)*9/10].Round(10 * time.Microsecond), err
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func webOn(ctx context.Context, h *home) (url, addr string, err error) {
	if addr, err = freeAddr(); err != nil {
		return
	}
	out, err := h.keel(ctx, "web", "--listen", addr, "--json")
	if err != nil {
		return
	}
	var w struct{ URL string }
	err = json.Unmarshal([]byte(out), &w)
	return w.URL, addr, err
}

func onRSS(ctx context.Context, tmp, bin string, browse time.Duration) error {
	h, err := newHome(tmp, bin, "on")
	if err != nil {
		return err
	}
	defer h.kill()
	if err := h.startApps(ctx, 3, 1); err != nil {
		return err
	}
	pid, err := h.pid()
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	idle, err := rssSamples(pid, 5, 200*time.Millisecond)
	if err != nil {
		return err
	}
	url, _, err := webOn(ctx, h)
	if err != nil {
		return err
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		return errors.New("chromium not found: apt-get install chromium")
	}
	bctx, stopBrowser := context.WithCancel(ctx)
	defer stopBrowser()
	cmd := exec.CommandContext(bctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+filepath.Join(tmp, "chromium"), "--remote-debugging-port=0", url)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting chromium: %w", err)
	}
	defer cmd.Wait()
	defer stopBrowser()
	// Sample through the browse time, after a few seconds to load.
	time.Sleep(min(5*time.Second, browse/2))
	var peak int64
	var s []int64
	end := time.Now().Add(browse)
	for time.Now().Before(end) {
		m, err := core.ReadMem(pid)
		if err != nil {
			return err
		}
		s = append(s, m.RSS)
		peak = max(peak, m.RSS)
		time.Sleep(500 * time.Millisecond)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	fmt.Printf("idle, listener off: %s; on with the dashboard open %s: median %s, peak %s; rise %s (median), %s (peak)\n",
		core.MB(idle), browse, core.MB(s[len(s)/2]), core.MB(peak), core.MB(s[len(s)/2]-idle), core.MB(peak-idle))
	return nil
}

// cpuTicks is utime+stime of pid, in clock ticks (1/100 s).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

func scrapeCost(ctx context.Context, tmp, bin string, instances, scrapes int) error {
	h, err := newHome(tmp, bin, "scrape")
	if err != nil {
		return err
	}
	defer h.kill()
	if err := h.startApps(ctx, 20, instances/20); err != nil {
		return err
	}
	_, addr, err := webOn(ctx, h)
	if err != nil {
		return err
	}
	pid, err := h.pid()
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 10 * time.Second}
	scrape := func() (int, error) {
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return len(b), err
	}
	if _, err := scrape(); err != nil { // warm up
		return err
	}
	// Idle CPU over the same span, to subtract the stats sampler's share.
	var walls []time.Duration
	t0, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	size := 0
	for range scrapes {
		s := time.Now()
		n, err := scrape()
		if err != nil {
			return err
		}
		size = n
		walls = append(walls, time.Since(s))
	}
	span := time.Since(start)
	t1, _ := cpuTicks(pid)
	time.Sleep(span)
	t2, _ := cpuTicks(pid)
	busy := time.Duration(t1-t0) * 10 * time.Millisecond
	idle := time.Duration(t2-t1) * 10 * time.Millisecond
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	fmt.Printf("%d scrapes of %d bytes: wall median %s, p90 %s; daemon CPU %s during them, %s idle for as long: %s per scrape\n",
		scrapes, size, walls[len(walls)/2].Round(10*time.Microsecond), walls[len(walls)*9/10].Round(10*time.Microsecond),
		busy, idle, ((busy - idle) / time.Duration(scrapes)).Round(10*time.Microsecond))
	return nil
}
