// Command rolling puts an app under keel's load client while replacing its
// instances the way keel does, and counts every failed request:
//
//	-reloads K     K rolling reloads spread over the run: for each instance,
//	               start a new one, wait until it is ready, then stop the old
//	               one with SIGTERM (keel's `reload`)
//	-kill-every T  SIGKILL one instance every T (round-robin) and start its
//	               replacement at once (a crash and keel's restart)
//
// The instances share one listening socket that this command holds open
// throughout, as keel's daemon does, handed over as fd 3 (LISTEN_FDS) or
// through keel's Node preload. Apps (bench/apps):
//
//	hello     unmodified Node http server, preload, ready: listen
//	express   unmodified Express app, preload, ready: listen
//	sigterm   Node app handling SIGTERM itself, fd 3, ready: message
//	go        Go app with go-systemd activation, fd 3, ready: notify
//
//	go run ./bench/cmd/rolling -app express -n 2 -c 32 -d 8s -reloads 2
//	go run ./bench/cmd/rolling -app hello -n 4 -c 32 -d 15s -kill-every 1s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/harness"
	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/sockets"
)

func main() {
	os.Exit(run())
}

func run() int {
	appName := flag.String("app", "hello", "hello, express, sigterm or go")
	n := flag.Int("n", 2, "instances")
	conns := flag.Int("c", 32, "load client connections")
	d := flag.Duration("d", 8*time.Second, "duration of the load (at most 5m)")
	reloads := flag.Int("reloads", 2, "rolling reloads during the run")
	killEvery := flag.Duration("kill-every", 0, "SIGKILL one instance this often (0: never)")
	appsDir := flag.String("apps", "bench/apps", "directory of the bench apps")
	flag.Parse()
	if *d <= 0 || *d > 5*time.Minute || *n < 1 {
		fmt.Fprintln(os.Stderr, "rolling: -d must be in (0, 5m], -n at least 1")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, *appName, *appsDir, *n, *conns, *d, *reloads, *killEvery); err != nil {
		fmt.Fprintln(os.Stderr, "rolling:", err)
		return 1
	}
	return 0
}

func appFor(ctx context.Context, name, appsDir, tmp string) (harness.App, error) {
	switch name {
	case "hello":
		return harness.App{Name: name, Node: true, Preload: true, Ready: harness.ReadyListen,
			Argv: []string{filepath.Join(appsDir, "hello.js")}}, nil
	case "express":
		dir := filepath.Join(appsDir, "express")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "express")); err != nil {
			fmt.Fprintln(os.Stderr, "installing express into", dir)
			cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return harness.App{}, fmt.Errorf("npm install express: %w", err)
			}
		}
		return harness.App{Name: name, Node: true, Preload: true, Ready: harness.ReadyListen,
			Argv: []string{filepath.Join(dir, "server.js")}}, nil
	case "sigterm":
		return harness.App{Name: name, Node: true, Preload: true, ListenFDs: true, Ready: harness.ReadyMessage,
			Argv: []string{filepath.Join(appsDir, "sigterm.js")}}, nil
	case "go":
		bin := filepath.Join(tmp, "goapp")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./"+filepath.Join(appsDir, "goapp"))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return harness.App{}, fmt.Errorf("building the go app: %w", err)
		}
		return harness.App{Name: name, ListenFDs: true, Ready: harness.ReadyNotify, Argv: []string{bin}}, nil
	}
	return harness.App{}, fmt.Errorf("unknown app %q", name)
}

func bench(ctx context.Context, appName, appsDir string, n, conns int, d time.Duration, reloads int, killEvery time.Duration) error {
	tmp, err := os.MkdirTemp("", "keel-rolling-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	app, err := appFor(ctx, appName, appsDir, tmp)
	if err != nil {
		return err
	}
	env := harness.Env{TempDir: tmp}
	if app.Node {
		if env.NodeBin, err = exec.LookPath("node"); err != nil {
			return fmt.Errorf("node is not installed")
		}
		if env.Preload, err = nodeipc.PreloadPath(tmp); err != nil {
			return err
		}
	}
	addr, _ := sockets.Parse("127.0.0.1:0")
	sock, err := sockets.Listen(addr, sockets.Options{})
	if err != nil {
		return err
	}
	defer sock.Close()

	next := 0
	start := func() (*harness.Instance, error) {
		in, err := harness.Start(env, app, next, sock.File())
		next++
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := in.WaitReady(rctx); err != nil {
			in.Stop(syscall.SIGKILL, time.Second)
			return nil, err
		}
		return in, nil
	}
	instances := make([]*harness.Instance, n)
	defer func() {
		for _, in := range instances {
			if in != nil {
				in.Stop(syscall.SIGTERM, 10*time.Second)
			}
		}
	}()
	for i := range instances {
		if instances[i], err = start(); err != nil {
			return err
		}
	}

	fmt.Printf("%s: %d instances, %d connections, %v", appName, n, conns, d)
	if reloads > 0 {
		fmt.Printf(", %d rolling reloads", reloads)
	}
	if killEvery > 0 {
		fmt.Printf(", SIGKILL every %v", killEvery)
	}
	fmt.Println()

	began := time.Now()
	results := make(chan *load.Result, 1)
	loadErr := make(chan error, 1)
	go func() {
		r, err := load.Run(ctx, load.Config{URL: "http://" + sock.LocalAddr().String() + "/", Conns: conns, Duration: d})
		loadErr <- err
		results <- r
	}()

	at := func(t time.Duration) bool { // waits until t into the run
		timer := time.NewTimer(time.Until(began.Add(t)))
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var stopErrors int
	if reloads > 0 {
		for k := 1; k <= reloads; k++ {
			if !at(d * time.Duration(k) / time.Duration(reloads+1)) {
				break
			}
			t0 := time.Now()
			for i, old := range instances {
				nu, err := start()
				if err != nil {
					return fmt.Errorf("reload %d: new instance: %w", k, err)
				}
				instances[i] = nu
				if err := old.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
					stopErrors++
					fmt.Printf("  reload %d: old instance %d: %v\n", k, old.ID, err)
				}
			}
			fmt.Printf("  reload %d at %.1fs took %v\n", k, t0.Sub(began).Seconds(), time.Since(t0).Round(time.Millisecond))
		}
	}
	if killEvery > 0 {
		kills := 0
		for i := 0; ; i = (i + 1) % n {
			if !at(killEvery * time.Duration(kills+1)) {
				break
			}
			if time.Since(began) >= d {
				break
			}
			instances[i].Stop(syscall.SIGKILL, time.Second)
			kills++
			nu, err := start()
			if err != nil {
				return fmt.Errorf("restart after kill %d: %w", kills, err)
			}
			instances[i] = nu
		}
		fmt.Printf("  %d instances SIGKILLed and restarted\n", kills)
	}
	if err := <-loadErr; err != nil {
		return err
	}
	r := <-results
	fmt.Print(r)
	if r.Requests > 0 {
		fmt.Printf("success %.4f%%", 100*float64(r.OK)/float64(r.Requests))
		if stopErrors > 0 {
			fmt.Printf("; %d old instances did not exit 0", stopErrors)
		}
		fmt.Println()
	}
	return nil
}
