// Package core measures keel's core against pm2 (issue 2): the wall time
// of a list command, the daemon's memory, respawn time after SIGKILL and
// crash-loop behaviour. bench/cmd/core is the command; this package holds
// the process managers (Keel, PM2), the probe app's listener (Stamps) and
// the measurements, each bounded in time.
package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// App is one program to run under a manager.
type App struct {
	Name        string
	Script      string        // absolute path
	Interpreter string        // "none" runs Script itself
	Args        []string      // after --
	MinUptime   time.Duration // 0: the manager's default
	Instances   int           // 0: one
}

// Instance is one row of a manager's list.
type Instance struct {
	App      string
	PID      int
	Status   string
	Restarts int
	Reason   string // why errored or waiting, when the manager says
}

// Manager is a process manager under a private home directory.
type Manager interface {
	Name() string
	// Start defines and starts an app (Instances of it).
	Start(ctx context.Context, a App) error
	// ListCommand is the command whose wall time is measured: keel ls
	// --json, pm2 jlist.
	ListCommand(ctx context.Context) *exec.Cmd
	// Instances runs the list command and parses it.
	Instances(ctx context.Context) ([]Instance, error)
	// DaemonPID reads the daemon's pid file.
	DaemonPID() (int, error)
	// Pids lists every process running for this home (daemon, helpers,
	// apps and their children), found by its home in their environment.
	Pids() []int
	// Reload runs the manager's reload command for app (keel reload,
	// pm2 reload) and returns when the command does.
	Reload(ctx context.Context, app string) error
	// Stop runs the manager's stop command for app (keel stop, pm2 stop)
	// and returns when the command does.
	Stop(ctx context.Context, app string) error
	// LogDir is the directory of the apps' log files.
	LogDir() string
	// Close stops everything the manager started and removes its home.
	Close() error
}

// Keel runs bin with KEEL_HOME set to a private directory.
type Keel struct {
	Bin, Home string
	empty     string // a KEEL_HOME where no daemon runs, for FloorCommand
}

// NewKeel makes a private KEEL_HOME for bin.
func NewKeel(bin string) (*Keel, error) {
	home, err := os.MkdirTemp("", "keel-bench-home-*")
	if err != nil {
		return nil, err
	}
	empty, err := os.MkdirTemp("", "keel-bench-empty-*")
	if err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	return &Keel{Bin: bin, Home: home, empty: empty}, nil
}

// FloorCommand is keel version in a KEEL_HOME where no daemon runs (it
// asks for the daemon's version but does not start one): the CLI's own
// start-up, which keel ls --json includes.
func (k *Keel) FloorCommand(ctx context.Context) *exec.Cmd {
	c := exec.CommandContext(ctx, k.Bin, "version")
	c.Env = append(os.Environ(), "KEEL_HOME="+k.empty)
	return c
}

func (k *Keel) Name() string { return "keel" }

func (k *Keel) command(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, k.Bin, args...)
	c.Env = append(os.Environ(), "KEEL_HOME="+k.Home)
	return c
}

func (k *Keel) Start(ctx context.Context, a App) error {
	args := []string{"start", a.Script, "--name", a.Name}
	if a.Interpreter != "" {
		args = append(args, "--interpreter", a.Interpreter)
	}
	if a.MinUptime > 0 {
		args = append(args, "--min-uptime", a.MinUptime.String())
	}
	if a.Instances > 1 {
		args = append(args, "-i", strconv.Itoa(a.Instances))
	}
	if len(a.Args) > 0 {
		args = append(append(args, "--"), a.Args...)
	}
	return run(k.command(ctx, args...))
}

func (k *Keel) ListCommand(ctx context.Context) *exec.Cmd { return k.command(ctx, "ls", "--json") }

func (k *Keel) Reload(ctx context.Context, app string) error {
	return run(k.command(ctx, "reload", app))
}

func (k *Keel) Stop(ctx context.Context, app string) error {
	return run(k.command(ctx, "stop", app))
}

// LogDir is $KEEL_HOME/logs (internal/logs.Dir): <app>-<instance>-out.log.
func (k *Keel) LogDir() string { return filepath.Join(k.Home, "logs") }

func (k *Keel) Instances(ctx context.Context) ([]Instance, error) {
	out, err := output(k.ListCommand(ctx))
	if err != nil {
		return nil, err
	}
	return ParseKeelList(out)
}

// ParseKeelList parses the output of keel ls --json.
func ParseKeelList(out []byte) ([]Instance, error) {
	var rows []struct {
		App      string `json:"app"`
		PID      int    `json:"pid"`
		Status   string `json:"status"`
		Restarts int    `json:"restarts"`
		Reason   string `json:"reason"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("keel ls --json: %w", err)
	}
	ins := make([]Instance, len(rows))
	for i, r := range rows {
		ins[i] = Instance{App: r.App, PID: r.PID, Status: r.Status, Restarts: r.Restarts, Reason: r.Reason}
	}
	return ins, nil
}

func (k *Keel) DaemonPID() (int, error) { return readPID(filepath.Join(k.Home, "daemon.pid")) }

func (k *Keel) Pids() []int { return PidsWithEnv("KEEL_HOME=" + k.Home) }

// Keepers lists the pids of keel's per-process keepers (including the
// standby keeper kept ready for the next spawn).
func (k *Keel) Keepers() []int {
	var ks []int
	for _, pid := range k.Pids() {
		if args := Args(pid); len(args) > 1 && args[1] == "__keeper" {
			ks = append(ks, pid)
		}
	}
	return ks
}

func (k *Keel) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(k.command(ctx, "kill"))
	if pids := PidsWithEnv("KEEL_HOME=" + k.empty); len(pids) > 0 {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		err = errors.Join(err, fmt.Errorf("keel version started processes %v", pids))
	}
	return errors.Join(err, os.RemoveAll(k.empty), reap(k, k.Home))
}

// PM2 runs a pm2 binary with PM2_HOME set to a private directory.
type PM2 struct {
	Bin, Home string
}

// NewPM2 makes a private PM2_HOME for bin.
func NewPM2(bin string) (*PM2, error) {
	home, err := os.MkdirTemp("", "keel-bench-pm2-*")
	if err != nil {
		return nil, err
	}
	return &PM2{Bin: bin, Home: home}, nil
}

func (p *PM2) Name() string { return "pm2" }

func (p *PM2) command(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, p.Bin, args...)
	c.Env = append(os.Environ(), "PM2_HOME="+p.Home)
	return c
}

// Start writes a to a pm2 config file and starts that: pm2's CLI has no
// flag for min_uptime.
func (p *PM2) Start(ctx context.Context, a App) error {
	app := map[string]any{"name": a.Name, "script": a.Script, "args": a.Args}
	if a.Interpreter != "" {
		app["interpreter"] = a.Interpreter
	}
	if a.MinUptime > 0 {
		app["min_uptime"] = a.MinUptime.Milliseconds()
	}
	if a.Instances > 1 {
		app["instances"], app["exec_mode"] = a.Instances, "fork"
	}
	b, err := json.Marshal(map[string]any{"apps": []any{app}})
	if err != nil {
		return err
	}
	file := filepath.Join(p.Home, "bench-"+a.Name+".json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return err
	}
	return run(p.command(ctx, "start", file))
}

func (p *PM2) ListCommand(ctx context.Context) *exec.Cmd { return p.command(ctx, "jlist") }

func (p *PM2) Reload(ctx context.Context, app string) error {
	return run(p.command(ctx, "reload", app))
}

func (p *PM2) Stop(ctx context.Context, app string) error {
	return run(p.command(ctx, "stop", app))
}

// LogDir is $PM2_HOME/logs: <app>-out-<pm_id>.log for an app of several
// instances.
func (p *PM2) LogDir() string { return filepath.Join(p.Home, "logs") }

func (p *PM2) Instances(ctx context.Context) ([]Instance, error) {
	out, err := output(p.ListCommand(ctx))
	if err != nil {
		return nil, err
	}
	return ParsePM2List(out)
}

// ParsePM2List parses the output of pm2 jlist (lines before the one the
// JSON array starts on, such as a daemon start banner, are skipped).
func ParsePM2List(out []byte) ([]Instance, error) {
	if i := bytes.Index(out, []byte("\n[")); i >= 0 && !bytes.HasPrefix(out, []byte("[")) {
		out = out[i+1:]
	}
	var rows []struct {
		Name string `json:"name"`
		PID  int    `json:"pid"`
		Env  struct {
			Status   string `json:"status"`
			Restarts int    `json:"restart_time"`
		} `json:"pm2_env"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("pm2 jlist: %w", err)
	}
	ins := make([]Instance, len(rows))
	for i, r := range rows {
		ins[i] = Instance{App: r.Name, PID: r.PID, Status: r.Env.Status, Restarts: r.Env.Restarts}
	}
	return ins, nil
}

func (p *PM2) DaemonPID() (int, error) { return readPID(filepath.Join(p.Home, "pm2.pid")) }

func (p *PM2) Pids() []int { return PidsWithEnv("PM2_HOME=" + p.Home) }

// GaveUp returns the last line of pm2's log that says why it stopped
// restarting app, or "".
func (p *PM2) GaveUp(app string) string {
	b, _ := os.ReadFile(filepath.Join(p.Home, "pm2.log"))
	var last string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, app) && strings.Contains(l, "unstable restarts") {
			last = l
		}
	}
	if _, msg, ok := strings.Cut(last, ": "); ok { // drop the timestamp
		return strings.TrimSpace(msg)
	}
	return last
}

func (p *PM2) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(p.command(ctx, "kill"))
	return errors.Join(err, reap(p, p.Home))
}

// reap waits (up to 5 s) for every process of m to be gone after its
// kill command, SIGKILLs those left, and removes home. Leftovers are
// reported as an error: a manager's kill should leave none.
func reap(m Manager, home string) error {
	var left []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = m.Pids()
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	err := os.RemoveAll(home)
	if len(left) > 0 {
		err = errors.Join(fmt.Errorf("%s: %d processes still ran 5 s after kill; SIGKILLed %v", m.Name(), len(left), left), err)
	}
	return err
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: no pid in %q", path, b)
	}
	return pid, nil
}

// run runs c, and on failure says what it ran and what it printed.
func run(c *exec.Cmd) error {
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(c.Args, " "), err, out)
	}
	return nil
}

// output runs c and returns its stdout.
func output(c *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(c.Args, " "), err, stderr.Bytes())
	}
	return out, nil
}
