package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/poll"
)

// Stop leaves nothing behind: whatever an app starts — a child that called
// setsid, a daemon's double fork, a child that ignores SIGTERM, a
// grandchild that holds the app's stdout — ends with it after every verb
// that ends a process (restart, reload, a crash restart, stop, delete,
// kill).

// runEscapeApp runs the helper apps of these tests; ok is false for any
// other name.
//
//	escape     starts one descendant by the route in ESCAPE, then runs
//	           until SIGTERM (exit 0) or SIGUSR1 (exit 1: a crash)
//	linger     appends its pid to ESCAPE_DIR/pids and runs forever
//	forker     starts a linger in a session of its own and exits: a
//	           double fork
func runEscapeApp(name string) (code int, ok bool) {
	route, dir := os.Getenv("ESCAPE"), os.Getenv("ESCAPE_DIR")
	switch name {
	case "escape":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGUSR1)
		if route == "ignoreterm" {
			signal.Ignore(syscall.SIGTERM) // only SIGKILL, after kill_timeout, ends it
		}
		var c *exec.Cmd
		switch route {
		case "setsid", "ignoreterm":
			c = helperCmd("linger")
			c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		case "doublefork", "stdout":
			c = helperCmd("forker")
			c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		}
		if route == "stdout" {
			c.Stdout = os.Stdout
		}
		run := c.Run // the forker exits at once
		if route == "setsid" || route == "ignoreterm" {
			run = c.Start
		}
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, "escape:", err)
			return 1, true
		}
		fmt.Println("escape ready", route)
		if s := <-sig; s == syscall.SIGUSR1 {
			return 1, true
		}
		return 0, true
	case "linger":
		if route == "ignoreterm" {
			signal.Ignore(syscall.SIGTERM)
		}
		f, err := os.OpenFile(filepath.Join(dir, "pids"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return 1, true
		}
		fmt.Fprintf(f, "%d\n", os.Getpid())
		f.Close()
		if route == "stdout" {
			fmt.Println("lingering", os.Getpid())
		}
		select {}
	case "forker":
		c := helperCmd("linger")
		c.Stdout = os.Stdout
		if err := c.Start(); err != nil {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// lingerPids reads the pids the linger helpers wrote in dir, in order.
func lingerPids(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "pids"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func helperCmd(app string) *exec.Cmd {
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), "KEEL_E2E_APP="+app)
	return c
}

func TestEscapeSetsid(t *testing.T)     { testEscape(t, "setsid") }
func TestEscapeDoubleFork(t *testing.T) { testEscape(t, "doublefork") }
func TestEscapeIgnoreTerm(t *testing.T) { testEscape(t, "ignoreterm") }
func TestEscapeStdout(t *testing.T)     { testEscape(t, "stdout") }

func testEscape(t *testing.T, route string) {
	e := newEnv(t)
	dir := t.TempDir()
	flags := []string{"--env", "ESCAPE=" + route, "--env", "ESCAPE_DIR=" + dir,
		"--kill-timeout", "300ms", "--restart-delay", "10ms"}
	pids := func() []int { return lingerPids(dir) }
	// escaped waits for the n-th descendant and returns its pid.
	escaped := func(n int) int {
		t.Helper()
		var l []int
		poll.Until(t, 20*time.Second, fmt.Sprintf("descendant %d to start", n), func() bool {
			l = pids()
			return len(l) >= n
		})
		if len(l) != n {
			t.Fatalf("descendants %v, want %d", l, n)
		}
		if !alive(l[n-1]) {
			t.Fatalf("descendant %d (pid %d) is not running", n, l[n-1])
		}
		return l[n-1]
	}
	gone := func(verb string, pid int) {
		t.Helper()
		if !poll.Within(10*time.Second, func() bool { return !alive(pid) }) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("after %s, the app's descendant %d (%s) still runs", verb, pid, route)
		}
	}
	online := func() api.Instance {
		t.Helper()
		return e.waitFor("online", allStatus("esc", 1, "online"))[0]
	}

	e.app("esc", "escape", flags...)
	online()
	d := escaped(1)
	// describe says how descendants end, and why no cgroup is used here.
	var det []api.AppDetail
	if err := jsonUnmarshal(e.ok("describe", "esc", "--json"), &det); err != nil || len(det) != 1 ||
		!strings.Contains(det[0].Containment, "child subreaper") {
		t.Fatalf("describe: %+v, %v", det, err)
	}
	if route == "stdout" {
		poll.Until(t, 10*time.Second, "the descendant's line in the log", func() bool {
			return strings.Contains(e.ok("logs", "esc", "--lines", "50"), fmt.Sprintf("lingering %d", d))
		})
	}

	e.ok("restart", "esc")
	gone("restart", d)
	online()
	d = escaped(2)

	e.ok("reload", "esc")
	gone("reload", d)
	online()
	d = escaped(3)

	in := online()
	if err := syscall.Kill(in.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	gone("a crash", d)
	e.waitFor("restarted after the crash", func(l []api.Instance) bool {
		return len(l) == 1 && l[0].Status == "online" && l[0].Restarts == in.Restarts+1
	})
	d = escaped(4)

	e.ok("stop", "esc")
	gone("stop", d)

	e.ok("restart", "esc")
	online()
	d = escaped(5)
	e.ok("delete", "esc")
	gone("delete", d)

	e.app("esc", "escape", flags...)
	online()
	d = escaped(6)
	e.ok("kill")
	gone("kill", d)
}
