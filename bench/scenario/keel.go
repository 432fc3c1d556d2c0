package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Keel runs apps under a keel daemon with a private KEEL_HOME: `keel start
// <script> --name <app> -i N --listen 127.0.0.1:PORT`, `keel reload`,
// `keel ls --json`, `keel kill`.
type Keel struct {
	Bin string
	// Timeout bounds Start and Reload; 0: StartTimeout and a minute
	// (bench/cmd/scale gives 100 instances longer).
	Timeout time.Duration
	home    string
	app     string
	n       int
}

// NewKeel makes a private KEEL_HOME for bin.
func NewKeel(bin string) (*Keel, error) {
	home, err := os.MkdirTemp("", "keel-scenario-home-*")
	if err != nil {
		return nil, err
	}
	return &Keel{Bin: bin, home: home}, nil
}

// Name implements Manager.
func (k *Keel) Name() string { return "keel" }

// Home is the private KEEL_HOME.
func (k *Keel) Home() string { return k.home }

func (k *Keel) env(extra ...string) []string {
	return append(append(os.Environ(), "KEEL_HOME="+k.home), extra...)
}

// StartArgs is the `keel start` command line for app.
func StartArgs(app App, n, port int) []string {
	args := []string{"start", app.Script, "--name", app.Name, "-i", strconv.Itoa(n),
		"--listen", "127.0.0.1:" + strconv.Itoa(port), "--kill-timeout", "5s",
		"--env", "PORT=" + strconv.Itoa(port)}
	if app.KeelReady != "" {
		args = append(args, "--ready", app.KeelReady)
	}
	return append(args, app.KeelArgs...)
}

// Start implements Manager.
func (k *Keel) Start(ctx context.Context, app App, n, port int) error {
	k.app, k.n = app.Name, n
	ctx, cancel := context.WithTimeout(ctx, k.startTimeout())
	defer cancel()
	if _, err := run(ctx, k.startTimeout(), k.env(), k.Bin, StartArgs(app, n, port)...); err != nil {
		return err
	}
	if err := k.waitOnline(ctx); err != nil {
		return err
	}
	if err := WaitServing(ctx, URL(port), n, k.startTimeout()); err != nil {
		return fmt.Errorf("%w; keel ls: %s", err, k.summary())
	}
	return nil
}

// summary is the app's instances as "0 online pid 12 restarts 0, …",
// for errors.
func (k *Keel) summary() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ins, err := k.instances(ctx)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, in := range ins {
		if in.App == k.app {
			parts = append(parts, fmt.Sprintf("%d %s pid %d restarts %d", in.Instance, in.Status, in.PID, in.Restarts))
		}
	}
	return strings.Join(parts, ", ")
}

// waitOnline polls `keel ls --json` until every instance is online.
func (k *Keel) waitOnline(ctx context.Context) error {
	var last []KeelInstance
	for {
		ins, err := k.instances(ctx)
		if err == nil {
			last = ins
			if online(ins, k.app) >= k.n {
				return nil
			}
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("keel: %d of %d instances of %s online within %v (keel ls: %s)", online(last, k.app), k.n, k.app, k.startTimeout(), k.summary())
		}
	}
}

func online(ins []KeelInstance, app string) int {
	n := 0
	for _, in := range ins {
		if in.App == app && in.Status == "online" && in.PID > 0 {
			n++
		}
	}
	return n
}

// KeelInstance is the part of a `keel ls --json` object the scenarios use.
type KeelInstance struct {
	App      string `json:"app"`
	Instance int    `json:"instance"`
	PID      int    `json:"pid"`
	Status   string `json:"status"`
	Restarts int    `json:"restarts"`
}

// ParseKeelList parses `keel ls --json`.
func ParseKeelList(b []byte) ([]KeelInstance, error) {
	var ins []KeelInstance
	if err := json.Unmarshal(b, &ins); err != nil {
		return nil, fmt.Errorf("keel ls --json: %w", err)
	}
	return ins, nil
}

// KeelPids is the pids of app's instances 0..n-1 (0 where none runs).
func KeelPids(ins []KeelInstance, app string, n int) []int {
	pids := make([]int, n)
	for _, in := range ins {
		if in.App == app && in.Instance >= 0 && in.Instance < n && in.Status != "stopped" && in.Status != "stopping" {
			pids[in.Instance] = in.PID
		}
	}
	return pids
}

func (k *Keel) instances(ctx context.Context) ([]KeelInstance, error) {
	out, err := run(ctx, 10*time.Second, k.env(), k.Bin, "ls", "--json")
	if err != nil {
		return nil, err
	}
	return ParseKeelList(out)
}

// Reload implements Manager.
func (k *Keel) Reload(ctx context.Context) error {
	_, err := run(ctx, k.reloadTimeout(), k.env(), k.Bin, "reload", k.app)
	return err
}

// Pids implements Manager.
func (k *Keel) Pids(ctx context.Context) ([]int, error) {
	ins, err := k.instances(ctx)
	if err != nil {
		return nil, err
	}
	return KeelPids(ins, k.app, k.n), nil
}

// Restarts is the sum of the app's instances' restart counts.
func (k *Keel) Restarts(ctx context.Context) (int, error) {
	ins, err := k.instances(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range ins {
		if in.App == k.app {
			n += in.Restarts
		}
	}
	return n, nil
}

// CrashGroups is the app's `keel crashes --json`: each group's title and
// count.
func (k *Keel) CrashGroups(ctx context.Context) ([]CrashGroup, error) {
	out, err := run(ctx, 10*time.Second, k.env(), k.Bin, "crashes", k.app, "--json")
	if err != nil {
		return nil, err
	}
	var gs []CrashGroup
	if err := json.Unmarshal(out, &gs); err != nil {
		return nil, fmt.Errorf("keel crashes --json: %w", err)
	}
	return gs, nil
}

// Close implements Manager: `keel kill`, then SIGKILL of anything left
// with this KEEL_HOME, then the home is removed.
func (k *Keel) Close() error {
	_, err := run(context.Background(), stopTimeout, k.env(), k.Bin, "kill")
	if rerr := reap("KEEL_HOME="+k.home, 5*time.Second); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if rmErr := os.RemoveAll(k.home); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	return err
}

// ServerCPU is the CPU time used so far by every live process of this
// KEEL_HOME: daemon, keepers, instances.
func (k *Keel) ServerCPU() time.Duration { return ProcsCPU(PidsWithEnv("KEEL_HOME=" + k.home)) }

func (k *Keel) startTimeout() time.Duration {
	if k.Timeout > 0 {
		return k.Timeout
	}
	return StartTimeout
}

func (k *Keel) reloadTimeout() time.Duration {
	if k.Timeout > 0 {
		return k.Timeout
	}
	return time.Minute
}
