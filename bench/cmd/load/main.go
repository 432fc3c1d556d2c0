// Command load runs keel's HTTP load client against a URL and prints what
// it measured: requests, failures by kind, req/s, latency percentiles and
// each instance's share.
//
//	go run ./bench/cmd/load -url http://127.0.0.1:3000/ -c 32 -d 8s
//
// It exits 1 when more than -max-failures requests failed (default: any
// failure is reported but does not change the exit status), 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keel-run/keel/bench/load"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var cfg load.Config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:3000/", "URL to GET")
	fs.IntVar(&cfg.Conns, "c", 32, "concurrent keep-alive connections")
	fs.DurationVar(&cfg.Duration, "d", 8*time.Second, "duration of the run (at most 10m)")
	fs.Int64Var(&cfg.MaxRequests, "n", 0, "stop after this many requests (0: no limit)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of one request")
	fs.DurationVar(&cfg.Backoff, "backoff", 10*time.Millisecond, "wait after a refused connection")
	fs.StringVar(&cfg.InstanceHeader, "header", "X-Keel-Instance", "response header naming the instance")
	fs.BoolVar(&cfg.InstanceFromBody, "body-instance", false, "take the instance from the body when the header is absent")
	fs.BoolVar(&cfg.Close, "close", false, "a new connection for every request (Connection: close)")
	fs.IntVar(&cfg.Threads, "t", 0, "event loops, each on a thread of its own (0: one per CPU)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	maxFailures := fs.Int64("max-failures", -1, "exit 1 if more requests than this failed (-1: never)")
	fs.Func("special", "PATH:N sends one request in N to PATH, counted apart (repeatable)", func(v string) error {
		i := strings.LastIndexByte(v, ':')
		n, err := strconv.Atoi(v[i+1:])
		if i < 0 || err != nil || n < 2 || !strings.HasPrefix(v, "/") {
			return fmt.Errorf("want PATH:N with a path from / and N ≥ 2, got %q", v)
		}
		cfg.Specials = append(cfg.Specials, load.Special{Path: v[:i], Every: n})
		return nil
	})
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if cfg.Duration <= 0 || cfg.Duration > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "load: -d must be between 0 and 10m")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := load.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		fmt.Print(r)
		for _, s := range r.Specials {
			fmt.Printf("special %s: %d requests, statuses %v, failed %v\n", s.Path, s.Requests, s.Status, s.Failed)
		}
	}
	if *maxFailures >= 0 && r.Failures() > *maxFailures {
		fmt.Fprintf(os.Stderr, "load: %d requests failed (allowed: %d)\n", r.Failures(), *maxFailures)
		return 1
	}
	return 0
}
