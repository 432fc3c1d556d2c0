package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/poll"
)

// tmuxPane is one terminal of a private tmux server: keys go in with
// send-keys, the screen comes out with capture-pane.
type tmuxPane struct {
	t    *testing.T
	bin  string
	sock string
}

// newTmux starts a private tmux server (its own socket, no user config)
// with one 100×32 pane running command through sh, and kills the server
// when the test ends. The pane stays after command exits, so its last
// screen can be read.
func newTmux(t *testing.T, command string) *tmuxPane {
	t.Helper()
	bin, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed (Debian: apt-get install tmux); the interactive monit's terminal test needs it")
	}
	dir, err := os.MkdirTemp("", "keel-tmux-") // short: a socket path
	if err != nil {
		t.Fatal(err)
	}
	p := &tmuxPane{t: t, bin: bin, sock: filepath.Join(dir, "s")}
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g status off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command(bin, "-S", p.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	p.run("-f", conf, "new-session", "-d", "-s", "monit", "-x", "100", "-y", "32", command)
	return p
}

func (p *tmuxPane) run(args ...string) string {
	p.t.Helper()
	out, err := exec.Command(p.bin, append([]string{"-S", p.sock}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (p *tmuxPane) keys(keys ...string) {
	p.t.Helper()
	p.run(append([]string{"send-keys", "-t", "monit"}, keys...)...)
}

func (p *tmuxPane) screen() string {
	p.t.Helper()
	return p.run("capture-pane", "-p", "-t", "monit")
}

// waitScreen waits until the screen holds every one of want.
func (p *tmuxPane) waitScreen(what string, want ...string) string {
	p.t.Helper()
	var s string
	ok := poll.Within(20*time.Second, func() bool {
		s = p.screen()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false
			}
		}
		return true
	})
	if !ok {
		p.t.Fatalf("timed out waiting for %s (%q); the screen:\n%s", what, want, s)
	}
	return s
}

func pidOf(l []api.Instance, app string) int {
	for _, in := range l {
		if in.App == app {
			return in.Pid
		}
	}
	return 0
}

// TestMonitInTmux runs the real keel monit against a real daemon on a
// real terminal (a tmux pane) and works it with keys, as a user would.
func TestMonitInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (Debian: apt-get install tmux); the interactive monit's terminal test needs it")
	}
	e := newEnv(t)
	e.app("alpha", "sleep")
	e.app("beta", "sleep")
	l := e.waitFor("alpha and beta online", func(l []api.Instance) bool {
		return allStatus("alpha", 1, "online")(l) && allStatus("beta", 1, "online")(l)
	})
	alpha, beta := pidOf(l, "alpha"), pidOf(l, "beta")

	dir := t.TempDir()
	before, after := filepath.Join(dir, "stty-before"), filepath.Join(dir, "stty-after")
	// The pane's shell records the terminal's modes before and after
	// monit, and how monit exited.
	command := "stty -g > " + before + "; " +
		"env KEEL_E2E_MAIN=1 KEEL_HOME=" + e.home + " GORACE=atexit_sleep_ms=0 " + os.Args[0] + " monit --interval 200ms; " +
		"echo \"monit exited $?\"; stty -g > " + after + "; read line" // read: the pane lives on to be inspected
	p := newTmux(t, command)

	s := p.waitScreen("monit's first screen with alpha selected and its log line",
		"keel monit", "2 apps · 2 instances · 2 online", "› alpha", "logs: alpha", "alpha:0 | sleeping "+strconv.Itoa(alpha),
		"alpha · CPU and memory", "r restart")
	t.Logf("the screen:\n%s", s)
	if f := p.run("display", "-p", "-t", "monit", "#{alternate_on} #{cursor_flag} #{wrap_flag}"); strings.TrimSpace(f) != "1 0 0" {
		t.Errorf("while monit runs: alternate screen, cursor shown, autowrap = %s, want 1 0 0", f)
	}

	p.keys("Down")
	p.waitScreen("the selection on beta and its log line", "› beta", "logs: beta", "beta:0 | sleeping "+strconv.Itoa(beta))
	p.keys("Up")
	p.waitScreen("the selection back on alpha", "› alpha", "logs: alpha")
	p.keys("j")
	p.waitScreen("j to move down", "› beta")

	p.keys("r")
	p.waitScreen("the confirmation", "Restart beta? y = yes")
	if got := pidOf(e.ls(), "beta"); got != beta {
		t.Fatalf("beta restarted before the confirmation: pid %d, was %d", got, beta)
	}
	p.keys("y")
	l = e.waitFor("beta restarted with a new pid", func(l []api.Instance) bool {
		return allStatus("beta", 1, "online")(l) && pidOf(l, "beta") != beta
	})
	if pidOf(l, "alpha") != alpha {
		t.Errorf("alpha restarted too: pid %d, was %d", pidOf(l, "alpha"), alpha)
	}
	nb := strconv.Itoa(pidOf(l, "beta"))
	s = p.waitScreen("the new pid and its log line", "restarted beta", nb, "beta:0 | sleeping "+nb)

	// l (or R) reloads, after y; alpha has no sockets, so a reload is a
	// restart: a new pid.
	p.keys("k", "l")
	p.waitScreen("the reload confirmation", "Reload alpha? y = yes")
	p.keys("y")
	e.waitFor("alpha reloaded with a new pid", func(l []api.Instance) bool {
		return allStatus("alpha", 1, "online")(l) && pidOf(l, "alpha") != alpha
	})
	p.waitScreen("the reload's result", "reloaded alpha")

	p.keys("q")
	s = p.waitScreen("monit to quit", "monit exited 0")
	t.Logf("the screen after q:\n%s", s)
	if strings.Contains(s, "keel monit") {
		t.Errorf("monit's screen is still shown after q:\n%s", s)
	}
	flags := strings.Fields(p.run("display", "-p", "-t", "monit", "#{alternate_on} #{cursor_flag} #{wrap_flag}"))
	if strings.Join(flags, " ") != "0 1 1" {
		t.Errorf("after q: alternate screen, cursor shown, autowrap = %v, want 0 1 1", flags)
	}
	poll.Until(t, 20*time.Second, "the shell to record the terminal's modes after monit", func() bool {
		b, err := os.ReadFile(after)
		return err == nil && len(b) > 0
	})
	b1, _ := os.ReadFile(before)
	b2, _ := os.ReadFile(after)
	if string(b1) != string(b2) {
		t.Errorf("terminal modes not restored: stty -g before %q, after %q", b1, b2)
	}
}
