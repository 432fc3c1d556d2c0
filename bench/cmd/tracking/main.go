// Command tracking measures what graceful crash's request tracking costs a
// Node server: the same app under keel's preload, once as keel ran it
// before graceful crash (tracking off) and once with graceful crash on
// (the preload marks each request's async context, and an async hook
// carries the mark, so a fatal error can be pinned on its request).
//
//	go run ./bench/cmd/tracking -app hello.js -c 16 -d 3s -rounds 10
//
// The two servers run side by side, each with its own load client, in
// every round, so a busy machine slows both alike (with -alone, one after
// the other, the order alternating); each round prints both
// servers' req/s and CPU time per request (from /proc/<pid>/stat), and the
// end the medians of the rounds' ratios (on ÷ off). No daemon is
// involved: the command plays keel's keeper itself (internal/sockets and
// internal/nodeipc), as bench/cmd/balance does.
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
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/bench/scenario"
	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/sockets"
)

func main() { os.Exit(run()) }

type side struct {
	name string
	env  []string
	in   *instance
	sock *sockets.Listener
}

type outcome struct {
	res *load.Result
	cpu time.Duration
	err error
}

func run() int {
	app := flag.String("app", "hello.js", "the app, in -apps (express/server.js needs npm install --prefix bench/apps/express)")
	appDir := flag.String("apps", "bench/apps", "directory of the bench apps")
	conns := flag.Int("c", 16, "load connections per server")
	d := flag.Duration("d", 3*time.Second, "duration of each round (at most 1m)")
	rounds := flag.Int("rounds", 10, "rounds")
	alone := flag.Bool("alone", false, "load one server at a time (order alternating by round), the other idle: less contention between them, more drift of the machine between the two")
	flag.Parse()
	if *d <= 0 || *d > time.Minute || *rounds < 1 || *conns < 1 {
		fmt.Fprintln(os.Stderr, "tracking: -d must be in (0, 1m], -rounds and -c at least 1")
		return 2
	}
	node, err := exec.LookPath("node")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracking: node is not installed")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "keel-tracking-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracking:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	preload, err := nodeipc.PreloadPath(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracking:", err)
		return 1
	}
	script, _ := filepath.Abs(filepath.Join(*appDir, *app))
	sides := []*side{
		{name: "off"},
		{name: "on", env: []string{nodeipc.GracefulCrashEnv(5 * time.Second)}},
	}
	defer func() {
		for _, s := range sides {
			if s.in != nil {
				s.in.stop()
			}
			if s.sock != nil {
				s.sock.Close()
			}
		}
	}()
	for i, s := range sides {
		addr, _ := sockets.Parse("127.0.0.1:0")
		if s.sock, err = sockets.Listen(addr, sockets.Options{}); err != nil {
			fmt.Fprintln(os.Stderr, "tracking:", err)
			return 1
		}
		if s.in, err = start(node, preload, script, i, s.sock.File(), s.env); err != nil {
			fmt.Fprintln(os.Stderr, "tracking:", err)
			return 1
		}
		if err := s.in.waitListening(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "tracking: %s: %v\n", s.name, err)
			return 1
		}
	}

	fmt.Printf("%s, %d connections per server, %v per round, node %s\n", *app, *conns, *d, nodeVersion(node))
	fmt.Printf("%5s %10s %10s %12s %12s %8s %8s\n", "round", "off req/s", "on req/s", "off µs/req", "on µs/req", "req/s ÷", "cpu ÷")
	var rpsRatios, cpuRatios []float64
	for r := 1; r <= *rounds; r++ {
		outs := make([]chan outcome, len(sides))
		for i := range sides {
			outs[i] = make(chan outcome, 1)
		}
		if *alone {
			order := []int{0, 1}
			if r%2 == 0 {
				order = []int{1, 0}
			}
			for _, i := range order {
				outs[i] <- measure(ctx, sides[i], *conns, *d)
			}
		} else {
			for i, s := range sides {
				go func() { outs[i] <- measure(ctx, s, *conns, *d) }()
			}
		}
		var res [2]outcome
		for i := range sides {
			res[i] = <-outs[i]
			if res[i].err != nil {
				fmt.Fprintf(os.Stderr, "tracking: %s: %v\n", sides[i].name, res[i].err)
				return 1
			}
		}
		per := func(o outcome) float64 { return float64(o.cpu.Microseconds()) / float64(max(o.res.OK, 1)) }
		rr, cr := res[1].res.RPS/res[0].res.RPS, per(res[1])/per(res[0])
		rpsRatios, cpuRatios = append(rpsRatios, rr), append(cpuRatios, cr)
		fmt.Printf("%5d %10.0f %10.0f %12.1f %12.1f %8.3f %8.3f\n", r, res[0].res.RPS, res[1].res.RPS, per(res[0]), per(res[1]), rr, cr)
	}
	fmt.Printf("median ratio on ÷ off: req/s %.3f, CPU per request %.3f (%d rounds)\n", median(rpsRatios), median(cpuRatios), *rounds)
	return 0
}

func measure(ctx context.Context, s *side, conns int, d time.Duration) outcome {
	before, err := cpu(s.in.cmd.Process.Pid)
	if err != nil {
		return outcome{err: err}
	}
	res, err := load.Run(ctx, load.Config{URL: "http://" + s.sock.LocalAddr().String() + "/", Conns: conns, Duration: d})
	if err != nil {
		return outcome{err: err}
	}
	if f := res.Failures(); f > 0 {
		return outcome{err: fmt.Errorf("%d requests failed", f)}
	}
	after, err := cpu(s.in.cmd.Process.Pid)
	return outcome{res: res, cpu: after - before, err: err}
}

// instance is one node process run with the preload and keel's channel,
// its socket handed over when it listens.
type instance struct {
	cmd    *exec.Cmd
	conn   *nodeipc.Conn
	events chan nodeipc.Event
	served chan error
	cancel context.CancelFunc
}

func start(node, preload, script string, i int, sock *os.File, env []string) (*instance, error) {
	parent, child, err := nodeipc.NewChannel()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", script, err)
	}
	cmd := exec.Command(node, "--require", preload, script)
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
		return nil, fmt.Errorf("start %s: %w", script, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cmd: cmd, conn: parent, events: make(chan nodeipc.Event, 16), served: make(chan error, 1), cancel: cancel}
	h := &nodeipc.Handler{
		Listen: func(context.Context, nodeipc.ListenRequest) (*os.File, error) { return sock, nil },
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
			return errors.New("the app did not listen within 20s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stop ends the process as keel does: the stop signal, SIGKILL after 5s.
func (in *instance) stop() {
	in.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { in.cmd.Wait(); close(done) }()
	t := time.NewTimer(5 * time.Second)
	select {
	case <-done:
	case <-t.C:
		in.cmd.Process.Kill()
		<-done
	}
	t.Stop()
	in.cancel()
	<-in.served
	in.conn.Close()
}

func cpu(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	_, t, err := scenario.ParseStat(b)
	return t, err
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func nodeVersion(node string) string {
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "?"
	}
	return string(out[:len(out)-1])
}
