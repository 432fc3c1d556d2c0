// Command balance measures how N Node instances share load behind one port,
// for each way of running them (issue 3, part 5), with keel's load client:
//
//	shared     one listening socket owned by the parent, handed to every
//	           instance by keel's preload (what keel does for `listen`)
//	reuseport  one SO_REUSEPORT socket per instance, same port, all owned
//	           by the parent and handed over the same way
//	cluster    Node's cluster module (bench/apps/cluster.js): round-robin
//	           from the primary
//	direct     a single Node process bound to the port, no parent
//	pm2        pm2's cluster mode (-pm2 path/to/pm2; see bench/install-pm2.sh)
//
//	go run ./bench/cmd/balance -modes shared,reuseport,cluster,direct -n 2 -c 64 -d 8s -runs 3
//
// It prints one line per run: req/s, failures, and each instance's share.
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
	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/sockets"
)

type options struct {
	n, conns, runs int
	d              time.Duration
	appDir         string
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
	flag.StringVar(&modes, "modes", "shared,reuseport,cluster,direct", "modes to measure: shared, reuseport, cluster, direct, pm2")
	flag.StringVar(&o.appDir, "apps", "bench/apps", "directory of the bench apps")
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
	fmt.Printf("%-10s %10s %8s  %s\n", "mode", "req/s", "failed", "shares (by instance)")
	for r := 0; r < o.runs; r++ {
		for _, mode := range strings.Split(modes, ",") {
			if ctx.Err() != nil {
				return 1
			}
			res, err := measure(ctx, mode, o)
			if err != nil {
				fmt.Fprintf(os.Stderr, "balance: %s: %v\n", mode, err)
				return 1
			}
			fmt.Printf("%-10s %10.0f %8d  %s\n", mode, res.RPS, res.Failures(), shares(res))
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

func startInstance(o options, preload string, i int, sock *os.File) (*instance, error) {
	parent, child, err := nodeipc.NewChannel()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.node, "--require", preload, filepath.Join(o.appDir, "hello.js"))
	cmd.Env = append(os.Environ(), "PORT=3000", "KEEL_INSTANCE="+strconv.Itoa(i))
	cmd.Env = append(cmd.Env, nodeipc.ChildEnv(3, "")...)
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

func measure(ctx context.Context, mode string, o options) (*load.Result, error) {
	switch mode {
	case "shared", "reuseport":
		return measurePreload(ctx, mode, o)
	case "cluster", "direct", "pm2":
		return measurePlain(ctx, mode, o)
	}
	return nil, fmt.Errorf("unknown mode %q", mode)
}

func measurePreload(ctx context.Context, mode string, o options) (*load.Result, error) {
	dir, err := os.MkdirTemp("", "keel-balance-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	preload, err := nodeipc.PreloadPath(dir)
	if err != nil {
		return nil, err
	}
	addr, _ := sockets.Parse("127.0.0.1:0")
	var socks []*sockets.Listener
	if mode == "shared" {
		l, err := sockets.Listen(addr, sockets.Options{})
		if err != nil {
			return nil, err
		}
		socks = []*sockets.Listener{l}
	} else {
		socks, err = sockets.ListenGroup(addr, o.n, sockets.Options{})
		if err != nil {
			return nil, err
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
		in, err := startInstance(o, preload, i, socks[i%len(socks)].File())
		if err != nil {
			return nil, err
		}
		ins = append(ins, in)
	}
	for _, in := range ins {
		if err := in.waitListening(ctx); err != nil {
			return nil, err
		}
	}
	return load.Run(ctx, load.Config{URL: "http://" + socks[0].LocalAddr().String() + "/", Conns: o.conns, Duration: o.d})
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
