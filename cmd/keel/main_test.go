package main

// End-to-end tests: the test binary plays every part. Run with
// KEEL_E2E_MAIN=1 it is keel itself (CLI, daemon, keepers); run with
// KEEL_E2E_APP=<name> it is one of the apps below. Each test gets its own
// KEEL_HOME, so each has its own daemon, and ends with `keel kill`.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"github.com/keel-run/keel/guard"
	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/serve"
)

func TestMain(m *testing.M) {
	// keel's own re-executions first: the pre-exec step carries the app's
	// environment (KEEL_E2E_APP) but must run keel's code.
	if len(os.Args) > 1 && (os.Args[1] == "__exec" || os.Args[1] == "__keeper") {
		main()
		return
	}
	if name := os.Getenv("KEEL_E2E_APP"); name != "" {
		os.Exit(runApp(name))
	}
	if os.Getenv("KEEL_E2E_MAIN") == "1" {
		os.Args = append([]string{"keel"}, os.Args[1:]...)
		main()
		return
	}
	os.Exit(m.Run())
}

// runApp is the body of each helper app.
func runApp(name string) int {
	if code, ok := runEscapeApp(name); ok {
		return code
	}
	if code, ok := runSteerApp(name); ok {
		return code
	}
	switch name {
	case "sleep": // runs until SIGTERM, then exits 0
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("sleeping", os.Getpid())
		<-sig
		fmt.Println("got SIGTERM, bye")
		return 0
	case "ignoreterm": // ignores SIGTERM: only SIGKILL ends it
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		select {}
	case "env": // prints two variables, then runs until SIGTERM
		fmt.Printf("from the shell: %q, from the daemon: %q\n", os.Getenv("KEEL_E2E_SHELL"), os.Getenv("KEEL_E2E_DAEMON"))
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		return 0
	case "procs": // prints its GOMAXPROCS, then runs until SIGTERM
		v, set := os.LookupEnv("GOMAXPROCS")
		_, marked := os.LookupEnv("KEEL_APP_GOMAXPROCS")
		fmt.Printf("GOMAXPROCS %q set %v, marked %v\n", v, set, marked)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		return 0
	case "crash": // fails at once
		fmt.Fprintln(os.Stderr, "fatal: cannot open config")
		return 3
	case "lines": // prints N numbered lines as fast as it can, then exits
		n, _ := strconv.Atoi(os.Getenv("LINES_N"))
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		if long, _ := strconv.Atoi(os.Getenv("LINES_LONG")); long > 0 {
			// One line of that many bytes: "é"s, then one byte that is
			// not UTF-8, then "x"s.
			b := append(bytes.Repeat([]byte("é"), long/4), 0xff)
			b = append(b, bytes.Repeat([]byte("x"), long-len(b))...)
			w.Write(append(b, '\n'))
		}
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "line %d\n", i)
		}
		if os.Getenv("LINES_PARTIAL") == "1" {
			w.WriteString("no newline at the end")
		}
		w.Flush()
		if os.Getenv("LINES_CRASH") == "1" {
			return 2
		}
		return 0
	case "serve": // HTTP on keel's socket (LISTEN_FDS) with READY=1
		return serveApp()
	case "guarded": // keel's own library: serve + guard, drain-and-exit on panic
		return guardedApp()
	case "panic": // a panic in a goroutine, its value varying per run
		go panicInWorker(os.Getpid())
		select {} // the panic ends the process
	}
	fmt.Fprintln(os.Stderr, "unknown helper app", name)
	return 99
}

func panicInWorker(n int) {
	var table []int
	_ = table[n%7+10] // index out of range: a runtime panic
}

func guardedApp() int {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Keel-Instance", os.Getenv("KEEL_INSTANCE"))
		fmt.Fprintf(w, "pid %d\n", os.Getpid())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("slow request in flight") // to be answered during a drain
		time.Sleep(time.Second)
		fmt.Fprintf(w, "pid %d\n", os.Getpid())
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		// A panic in a goroutine the handler started through its scope.
		sc := guard.ScopeOf(w)
		sc.Go(func(ctx context.Context) error {
			var m map[string]int
			m["boom"]++ // assignment to entry in nil map
			return nil
		})
		sc.Wait()
	})
	// GATE: not ready (serve.Run says READY=1) until this file exists.
	for gate := os.Getenv("GATE"); gate != ""; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(gate); err == nil {
			break
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	err := serve.Run(&http.Server{Handler: mux}, serve.Options{OnPanic: serve.DrainAndExit, Logger: logger})
	if err != nil {
		logger.Error("stopped", "error", err.Error())
		return 1
	}
	return 0
}

func serveApp() int {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") != "1" {
		fmt.Fprintf(os.Stderr, "bad activation env: LISTEN_PID=%s (pid %d) LISTEN_FDS=%s\n",
			os.Getenv("LISTEN_PID"), os.Getpid(), os.Getenv("LISTEN_FDS"))
		return 4
	}
	ln, err := net.FileListener(os.NewFile(3, "listen"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd 3:", err)
		return 5
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Keel-Instance", os.Getenv("KEEL_INSTANCE"))
		fmt.Fprintf(w, "pid %d\n", os.Getpid())
	})}
	if ns := os.Getenv("NOTIFY_SOCKET"); ns != "" {
		if c, err := net.Dial("unixgram", ns); err == nil {
			c.Write([]byte("READY=1\nSTATUS=serving"))
			c.Close()
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return 6
	}
	return 0
}

// env is one test's keel: its KEEL_HOME and how to call the CLI.
type env struct {
	t    *testing.T
	home string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Unix socket paths are short (108 bytes): keep KEEL_HOME short.
	home, err := os.MkdirTemp("", "keel-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, home: home}
	t.Cleanup(func() {
		e.kill()
		if !t.Failed() {
			os.RemoveAll(home)
		} else {
			t.Logf("KEEL_HOME kept for inspection: %s", home)
			if b, err := os.ReadFile(filepath.Join(home, "daemon.log")); err == nil {
				t.Logf("daemon.log:\n%s", tail(string(b), 4000))
			}
		}
	})
	return e
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type result struct {
	out, err string
	code     int
}

// keel runs the CLI and returns what it printed and its exit code.
func (e *env) keel(args ...string) result {
	e.t.Helper()
	return e.keelWith(nil, args...)
}

// keelWith runs keel with extra variables in its environment.
func (e *env) keelWith(extra []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	// Race-built children sleep 1s at exit by default; not ours.
	cmd.Env = append(os.Environ(), "KEEL_E2E_MAIN=1", "KEEL_HOME="+e.home, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running keel %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// ok runs the CLI and fails the test unless it exits 0.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.keel(args...)
	if r.code != 0 {
		e.t.Fatalf("keel %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

func (e *env) ls() []api.Instance {
	e.t.Helper()
	var l []api.Instance
	out := e.ok("ls", "--json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		e.t.Fatalf("ls --json printed non-JSON %q: %v", out, err)
	}
	return l
}

// waitFor polls ls until cond holds or the deadline passes.
func (e *env) waitFor(what string, cond func([]api.Instance) bool) []api.Instance {
	e.t.Helper()
	var l []api.Instance
	if poll.Within(20*time.Second, func() bool { l = e.ls(); return cond(l) }) {
		return l
	}
	e.t.Fatalf("timed out waiting for %s; ls: %+v", what, l)
	return nil
}

func allStatus(app string, n int, status string) func([]api.Instance) bool {
	return func(l []api.Instance) bool {
		c := 0
		for _, in := range l {
			if in.App == app && in.Status == status {
				c++
			}
		}
		return c == n
	}
}

func (e *env) daemonPid() int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.home, "daemon.pid"))
	if err != nil {
		e.t.Fatalf("reading daemon.pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		e.t.Fatalf("daemon.pid: %v", err)
	}
	return pid
}

// killDaemon SIGKILLs the daemon and waits until it is gone: until its
// control socket refuses connections. (Its pid is no guide: a SIGKILLed
// leader thread shows as a zombie while other threads still hold its
// files, so a connection could still be queued, then reset.)
func (e *env) killDaemon() int {
	e.t.Helper()
	dpid := e.daemonPid()
	if err := syscall.Kill(dpid, syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	sock := filepath.Join(e.home, "keel.sock")
	poll.Until(e.t, 10*time.Second, fmt.Sprintf("daemon %d to stop answering after SIGKILL", dpid), func() bool {
		c, err := net.Dial("unix", sock)
		if c != nil {
			c.Close()
		}
		return err != nil && !alive(dpid)
	})
	return dpid
}

// kill runs `keel kill` if a daemon is up, then checks that no process of
// this KEEL_HOME survives.
func (e *env) kill() {
	if _, err := os.Stat(filepath.Join(e.home, "keel.sock")); err == nil {
		e.keel("kill")
	}
	var left []int
	if !poll.Within(15*time.Second, func() bool { left = processesOf(e.home); return len(left) == 0 }) {
		e.t.Errorf("processes left behind after keel kill: %v", left)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// processesOf lists live processes whose environment names home as
// KEEL_HOME: the daemon, keepers and apps of one test.
func processesOf(home string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	needle := []byte("KEEL_HOME=" + home + "\x00")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/environ")
		if err != nil || !bytes.Contains(b, needle) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + d.Name() + "/stat"); err == nil {
			// A zombie has no environ; skip any that still show one.
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// alive reports whether pid is a live process (a zombie is not).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i < 0 || len(st) <= i+2 || st[i+2] != 'Z'
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// app starts a helper app with extra keel flags.
func (e *env) app(name, helper string, flags ...string) {
	e.t.Helper()
	args := append([]string{"start", os.Args[0], "--name", name, "--env", "KEEL_E2E_APP=" + helper}, flags...)
	e.ok(args...)
}
