// Command balance measures how N Node instances share load behind one port,
// for each way of running them (issue 3, part 5), with keel's load client:
//
//	shared     one listening socket owned by the parent, handed to every
//	           instance by keel's preload (what keel does for `listen`)
//	reuseport  one SO_REUSEPORT socket per instance, same port, all owned
//	           by the parent and handed over the same way
//	shared-gc, reuseport-gc
//	           the same with graceful crash on (keel's default): the
//	           preload tracks which request each piece of async work
//	           belongs to; comparing the pairs measures what that costs
//	cluster    Node's cluster module (bench/apps/cluster.js): round-robin
//	           from the primary
//	direct     a single Node process bound to the port, no parent
//	pm2        pm2's cluster mode (-pm2 path/to/pm2; see bench/install-pm2.sh)
//
//	go run ./bench/cmd/balance -modes shared,reuseport,cluster,direct -n 2 -c 64 -d 8s -runs 3
//
// It prints one line per run: req/s, failures, the instances' CPU time per
// request (preload modes; from /proc/<pid>/stat, so a busy machine moves
// it less than req/s), and each instance's share.
// No daemon is involved: the command plays keel's keeper itself, using
// internal/sockets and internal/nodeipc, so it measures the socket designs
// and nothing else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/bench/scenario"
	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/sockets"
)

type options struct {
	n, conns, runs int
	d              time.Duration
	appDir, app    string
	pm2            string
	node           string
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var modes string
	flag.IntVar(&o.n, "n", 2, "instances")
	flag.IntVar(&o.conns, "c", 64, "load client connections")
	flag.DurationVar(&o.d, "d", 8*time.Second, "duration of each run (at most 2m)")
	flag.IntVar(&o.runs, "runs", 3, "runs of each mode (interleaved)")
	flag.StringVar(&modes, "modes", "shared,reuseport,cluster,direct", "modes to measure: shared, reuseport, shared-gc, reuseport-gc, cluster, direct, pm2")
	flag.StringVar(&o.appDir, "apps", "bench/apps", "directory of the bench apps")
	flag.StringVar(&o.app, "app", "hello.js", "the app the preload modes run, in the apps directory (express/server.js needs npm install --prefix bench/apps/express)")
	flag.StringVar(&o.pm2, "pm2", "", "pm2 binary, for the pm2 mode")
	flag.Parse()
	if o.d <= 0 || o.d > 2*time.Minute || o.n < 1 || o.runs < 1 {
		fmt.Fprintln(os.Stderr, "balance: -d must be in (0, 2m], -n and -runs at least 1")
		return 2
	}
	var err error
	if o.node, err = exec.LookPath("node"); err != nil {
		fmt.Fprintln(os.Stderr, "balance: node is not installed")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("%d instances, %d connections, %v per run, node %s\n", o.n, o.conns, o.d, nodeVersion(o.node))
	fmt.Printf("%-12s %10s %8s %9s  %s\n", "mode", "req/s", "failed", "cpu µs/req", "shares (by instance)")
	for r := 0; r < o.runs; r++ {
		for _, mode := range strings.Split(modes, ",") {
			if ctx.Err() != nil {
				return 1
			}
			res, cpu, err := measure(ctx, mode, o)
			if err != nil {
				fmt.Fprintf(os.Stderr, "balance: %s: %v\n", mode, err)
				return 1
			}
			perReq := "-"
			if cpu > 0 && res.OK > 0 {
				perReq = fmt.Sprintf("%.1f", float64(cpu.Microseconds())/float64(res.OK))
			}
			fmt.Printf("%-12s %10.0f %8d %9s  %s\n", mode, res.RPS, res.Failures(), perReq, shares(res))
		}
	}
	return 0
}

func nodeVersion(node string) string {
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func shares(r *load.Result) string {
	ids := make([]string, 0, len(r.Instances))
	for id := range r.Instances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s:%.1f%% (%d conns)", id, 100*r.Share(id), r.ConnInstances[id]))
	}
	return strings.Join(parts, " ")
}

// instance is one node process run with the preload and a channel.
type instance struct {
	cmd    *exec.Cmd
	conn   *nodeipc.Conn
	events chan nodeipc.Event
	served chan error
	cancel context.CancelFunc
}

func startInstance(o options, preload string, i int, sock *os.File, env []string) (*instance, error) {
	parent, child, err := nodeipc.NewChannel()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.node, "--require", preload, filepath.Join(o.appDir, o.app))
	cmd.Env = append(os.Environ(), "PORT=3000", "KEEL_INSTANCE="+strconv.Itoa(i))
	cmd.Env = append(cmd.Env, nodeipc.ChildEnv(3, "")...)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = []*os.File{child}
	// A session of its own, as under keel's keepers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	err = cmd.Start()
	child.Close()
	if err != nil {
		parent.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cmd: cmd, conn: parent, events: make(chan nodeipc.Event, 16), served: make(chan error, 1), cancel: cancel}
	h := &nodeipc.Handler{
		Listen: func(ctx context.Context, req nodeipc.ListenRequest) (*os.File, error) { return sock, nil },
		Events: in.events,
	}
	go func() { in.served <- h.Serve(ctx, parent) }()
	return in, nil
}

func (in *instance) waitListening(ctx context.Context) error {
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	for {
		select {
		case ev := <-in.events:
			if ev.Kind == nodeipc.EventListening {
				return nil
			}
		case <-t.C:
			return errors.New("instance did not listen within 20s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (in *instance) stop() {
	in.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { in.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		in.cmd.Process.Kill()
		<-done
	}
	in.cancel()
	<-in.served
	in.conn.Close()
}

// measure runs one mode; cpu is the instances' CPU time during the load,
// 0 where not measured.
func measure(ctx context.Context, mode string, o options) (res *load.Result, cpu time.Duration, err error) {
	switch mode {
	case "shared", "reuseport", "shared-gc", "reuseport-gc":
		return measurePreload(ctx, mode, o)
	case "cluster", "direct", "pm2":
		res, err = measurePlain(ctx, mode, o)
		return res, 0, err
	}
	return nil, 0, fmt.Errorf("unknown mode %q", mode)
}

// cpuOf is the CPU time (user and system) the instances have used.
func cpuOf(ins []*instance) (time.Duration, error) {
	var sum time.Duration
	for _, in := range ins {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(in.cmd.Process.Pid) + "/stat")
		if err != nil {
			return 0, err
		}
		_, t, err := scenario.ParseStat(b)
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

func measurePreload(ctx context.Context, mode string, o options) (*load.Result, time.Duration, error) {
	dir, err := os.MkdirTemp("", "keel-balance-*")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	preload, err := nodeipc.PreloadPath(dir)
	if err != nil {
		return nil, 0, err
	}
	addr, _ := sockets.Parse("127.0.0.1:0")
	var socks []*sockets.Listener
	var env []string
	if m, ok := strings.CutSuffix(mode, "-gc"); ok {
		mode = m
		env = append(env, nodeipc.GracefulCrashEnv(5*time.Second))
	}
	if mode == "shared" {
		l, err := sockets.Listen(addr, sockets.Options{})
		if err != nil {
			return nil, 0, err
		}
		socks = []*sockets.Listener{l}
	} else {
		socks, err = sockets.ListenGroup(addr, o.n, sockets.Options{})
		if err != nil {
			return nil, 0, err
		}
	}
	defer func() {
		for _, l := range socks {
			l.Close()
		}
	}()
	var ins []*instance
	defer func() {
		for _, in := range ins {
			in.stop()
		}
	}()
	for i := 0; i < o.n; i++ {
		in, err := startInstance(o, preload, i, socks[i%len(socks)].File(), env)
		if err != nil {
			return nil, 0, err
		}
		ins = append(ins, in)
	}
	for _, in := range ins {
		if err := in.waitListening(ctx); err != nil {
			return nil, 0, err
		}
	}
	before, err := cpuOf(ins)
	if err != nil {
		return nil, 0, err
	}
	res, err := load.Run(ctx, load.Config{URL: "http://" + socks[0].LocalAddr().String() + "/", Conns: o.conns, Duration: o.d})
	if err != nil {
		return nil, 0, err
	}
	after, err := cpuOf(ins)
	if err != nil {
		return nil, 0, err
	}
	return res, after - before, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitServing GETs url until n distinct instances answered (bounded).
func waitServing(ctx context.Context, url string, n int) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	seen := map[string]bool{}
	limit := time.Now().Add(20 * time.Second)
	for len(seen) < n {
		if time.Now().After(limit) {
			return fmt.Errorf("only %d of %d instances answered within 20s", len(seen), n)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := c.Get(url)
		if err != nil {
			t := time.NewTimer(50 * time.Millisecond) // not up yet
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		resp.Body.Close()
		seen[resp.Header.Get("X-Keel-Instance")] = true
	}
	return nil
}

func measurePlain(ctx context.Context, mode string, o options) (*load.Result, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "PORT="+strconv.Itoa(port), "WORKERS="+strconv.Itoa(o.n))
	instances := o.n
	var cmd *exec.Cmd
	var cleanup func()
	switch mode {
	case "cluster":
		cmd = exec.Command(o.node, filepath.Join(o.appDir, "cluster.js"))
	case "direct":
		cmd = exec.Command(o.node, filepath.Join(o.appDir, "hello.js"))
		env = append(env, "KEEL_INSTANCE=0")
		instances = 1
	case "pm2":
		if o.pm2 == "" {
			return nil, errors.New("the pm2 mode needs -pm2 (bench/install-pm2.sh prints it)")
		}
		home, err := os.MkdirTemp("", "keel-pm2-home-*")
		if err != nil {
			return nil, err
		}
		env = append(env, "PM2_HOME="+home)
		app, _ := filepath.Abs(filepath.Join(o.appDir, "hello.js"))
		start := exec.Command(o.pm2, "start", app, "-i", strconv.Itoa(o.n), "--name", "hello")
		start.Env = env
		if out, err := start.CombinedOutput(); err != nil {
			os.RemoveAll(home)
			return nil, fmt.Errorf("pm2 start: %v\n%s", err, out)
		}
		cleanup = func() {
			kill := exec.Command(o.pm2, "kill")
			kill.Env = env
			kill.Run()
			os.RemoveAll(home)
		}
	}
	if cmd != nil {
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		cleanup = func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
	}
	defer cleanup()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if err := waitServing(ctx, url, instances); err != nil {
		return nil, err
	}
	return load.Run(ctx, load.Config{URL: url, Conns: o.conns, Duration: o.d})
}
