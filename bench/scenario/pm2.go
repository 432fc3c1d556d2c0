package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"
)

// PM2 runs Node apps in pm2's cluster mode with a private PM2_HOME:
// `pm2 start <script> -i N --name <app> --kill-timeout 5000`, `pm2 reload`,
// `pm2 jlist`, `pm2 kill`. Its daemon gets PM2_KILL_SIGNAL=SIGTERM, so pm2
// stops an instance with the same signal and timeout as keel (pm2's own
// default is SIGINT, which an app that handles SIGTERM would not drain on).
type PM2 struct {
	Bin string
	// Timeout bounds Start and Reload; 0: StartTimeout and a minute
	// (bench/cmd/scale gives 100 instances longer).
	Timeout time.Duration
	home    string
	app     string
	n       int
	port    int
}

// NewPM2 makes a private PM2_HOME for bin.
func NewPM2(bin string) (*PM2, error) {
	home, err := os.MkdirTemp("", "keel-scenario-pm2-*")
	if err != nil {
		return nil, err
	}
	return &PM2{Bin: bin, home: home}, nil
}

// Name implements Manager.
func (p *PM2) Name() string { return "pm2" }

func (p *PM2) env() []string {
	return append(os.Environ(), "PM2_HOME="+p.home, "PM2_KILL_SIGNAL=SIGTERM",
		"PORT="+strconv.Itoa(p.port))
}

// PM2StartArgs is the `pm2 start` command line for app.
func PM2StartArgs(app App, n int) []string {
	args := []string{"start", app.Script, "-i", strconv.Itoa(n), "--name", app.Name, "--kill-timeout", "5000"}
	return append(args, app.PM2Args...)
}

// Start implements Manager.
func (p *PM2) Start(ctx context.Context, app App, n, port int) error {
	if !app.Node {
		return fmt.Errorf("pm2's cluster mode runs Node apps only, not %s", app.Name)
	}
	p.app, p.n, p.port = app.Name, n, port
	ctx, cancel := context.WithTimeout(ctx, p.startTimeout())
	defer cancel()
	if _, err := run(ctx, p.startTimeout(), p.env(), p.Bin, PM2StartArgs(app, n)...); err != nil {
		return err
	}
	for {
		ins, err := p.list(ctx)
		if err == nil && pm2Online(ins, p.app) >= n {
			break
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("pm2: %d of %d instances online (%v)", pm2Online(ins, p.app), n, err)
		}
	}
	return WaitServing(ctx, URL(port), n, p.startTimeout())
}

// PM2Process is the part of a `pm2 jlist` object the scenarios use.
type PM2Process struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	ID   int    `json:"pm_id"`
	Env  struct {
		Status   string `json:"status"`
		Restarts int    `json:"restart_time"`
	} `json:"pm2_env"`
}

// ParsePM2List parses `pm2 jlist`: the first line that starts a JSON
// array and decodes as one (pm2 may print "[PM2] …" lines before it).
func ParsePM2List(b []byte) ([]PM2Process, error) {
	var first error
	for off := 0; off < len(b); {
		line := b[off:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		if bytes.HasPrefix(bytes.TrimLeft(line, " \t"), []byte("[")) {
			var ps []PM2Process
			err := json.NewDecoder(bytes.NewReader(b[off:])).Decode(&ps)
			if err == nil {
				return ps, nil
			}
			if first == nil {
				first = err
			}
		}
		off += len(line)
	}
	if first == nil {
		first = errors.New("no JSON array")
	}
	return nil, fmt.Errorf("pm2 jlist: %w in %q", first, lastLines(string(b), 3))
}

func pm2Online(ps []PM2Process, app string) int {
	n := 0
	for _, p := range ps {
		if p.Name == app && p.Env.Status == "online" && p.PID > 0 {
			n++
		}
	}
	return n
}

// PM2Pids is the pids of app's processes in pm_id order (0 where pm2
// reports none).
func PM2Pids(ps []PM2Process, app string) []int {
	var mine []PM2Process
	for _, p := range ps {
		if p.Name == app {
			mine = append(mine, p)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].ID < mine[j].ID })
	pids := make([]int, len(mine))
	for i, p := range mine {
		if p.Env.Status == "online" || p.Env.Status == "launching" {
			pids[i] = p.PID
		}
	}
	return pids
}

func (p *PM2) list(ctx context.Context) ([]PM2Process, error) {
	out, err := run(ctx, 10*time.Second, p.env(), p.Bin, "jlist")
	if err != nil {
		return nil, err
	}
	return ParsePM2List(out)
}

// Reload implements Manager.
func (p *PM2) Reload(ctx context.Context) error {
	_, err := run(ctx, p.reloadTimeout(), p.env(), p.Bin, "reload", p.app)
	return err
}

// Pids implements Manager.
func (p *PM2) Pids(ctx context.Context) ([]int, error) {
	ps, err := p.list(ctx)
	if err != nil {
		return nil, err
	}
	return PM2Pids(ps, p.app), nil
}

// Restarts is the sum of the app's processes' restart counts.
func (p *PM2) Restarts(ctx context.Context) (int, error) {
	ps, err := p.list(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range ps {
		if q.Name == p.app {
			n += q.Env.Restarts
		}
	}
	return n, nil
}

// Close implements Manager: `pm2 kill`, then SIGKILL of anything left
// with this PM2_HOME, then the home is removed.
func (p *PM2) Close() error {
	_, err := run(context.Background(), stopTimeout, p.env(), p.Bin, "kill")
	if rerr := reap("PM2_HOME="+p.home, 5*time.Second); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if rmErr := os.RemoveAll(p.home); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	return err
}

// ServerCPU is the CPU time used so far by every live process of this
// PM2_HOME: pm2's daemon and its workers.
func (p *PM2) ServerCPU() time.Duration { return ProcsCPU(PidsWithEnv("PM2_HOME=" + p.home)) }

func (p *PM2) startTimeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return StartTimeout
}

func (p *PM2) reloadTimeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return time.Minute
}
