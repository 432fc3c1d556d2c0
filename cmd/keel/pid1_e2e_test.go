package main

// keel run as a container runs it: PID 1 of a new PID namespace
// (unshare --pid --fork --mount-proc), answering the kubelet's probes on
// --health, reloaded from inside the namespace, stopped with SIGTERM.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/internal/poll"
)

// pid1 is one `keel run` in a PID namespace of its own.
type pid1 struct {
	t      *testing.T
	e      *env
	cmd    *exec.Cmd // unshare, which waits for keel and exits as it does
	out    *syncBuffer
	pid    int    // keel's pid as seen from the test
	health string // http://host:port of --health
}

// requireUnshare skips the test where a PID namespace cannot be made
// (no CAP_SYS_ADMIN, or no unshare(1)).
func requireUnshare(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("skipping: unshare(1) from util-linux is not installed; it makes the PID namespace keel run is PID 1 of")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot make a PID namespace here (needs root or CAP_SYS_ADMIN): unshare: %v: %s", err, bytes.TrimSpace(out))
	}
}

// startPID1 starts `keel run cfg --health 127.0.0.1:port` as PID 1 of a new
// PID namespace and waits until it answers on the health port.
func (e *env) startPID1(cfg string, healthPort int) *pid1 {
	t := e.t
	t.Helper()
	requireUnshare(t)
	addr := "127.0.0.1:" + strconv.Itoa(healthPort)
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
		os.Args[0], "run", cfg, "--health", addr)
	cmd.Env = append(os.Environ(), "KEEL_E2E_MAIN=1", "KEEL_HOME="+e.home, "GORACE=atexit_sleep_ms=0")
	out := &syncBuffer{mu: make(chan struct{}, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill() // --kill-child: keel gets SIGKILL too
			cmd.Wait()
		}
	})
	p := &pid1{t: t, e: e, cmd: cmd, out: out, health: "http://" + addr}
	poll.Until(t, 10*time.Second, "keel run to start under unshare", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		f := strings.Fields(string(b))
		if len(f) == 1 {
			p.pid, _ = strconv.Atoi(f[0])
		}
		return p.pid != 0
	})
	// keel is PID 1 in its namespace: the last NSpid is its pid there.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "NSpid:" && f[len(f)-1] != "1" {
			t.Fatalf("keel run is not PID 1 in its namespace: %s", l)
		}
	}
	poll.Until(t, 10*time.Second, "the health endpoint to answer", func() bool {
		_, _, err := p.get("/livez")
		return err == nil
	})
	return p
}

var probeClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get asks a probe endpoint; err is a transport failure.
func (p *pid1) get(path string) (int, string, error) {
	resp, err := probeClient.Get(p.health + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// want asks path and fails unless it answers code.
func (p *pid1) want(path string, code int) string {
	p.t.Helper()
	got, body, err := p.get(path)
	if err != nil || got != code {
		p.t.Fatalf("GET %s: %d %q %v, want %d; keel run's output:\n%s", path, got, body, err, code, tail(p.out.String(), 4000))
	}
	return body
}

// keel runs a keel command inside the namespace, as `kubectl exec` would.
func (p *pid1) keel(args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(p.pid), "--pid", "--mount", "--", os.Args[0]}, args...)...)
	cmd.Env = append(os.Environ(), "KEEL_E2E_MAIN=1", "KEEL_HOME="+p.e.home, "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("keel %s in the namespace: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// noZombies waits until no process under keel is a zombie (one may be for
// the moment between its exit and keel's wait).
func (p *pid1) noZombies() {
	p.t.Helper()
	var z []string
	if !poll.Within(5*time.Second, func() bool { z = zombiesUnder(p.pid); return len(z) == 0 }) {
		p.t.Fatalf("zombies under keel run (pid %d): %v", p.pid, z)
	}
}

// zombiesUnder lists the zombie descendants of pid ("pid name").
func zombiesUnder(root int) []string {
	type proc struct {
		ppid  int
		state byte
		name  string
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < 0 || end+4 > len(s) {
			continue
		}
		f := strings.Fields(s[end+2:])
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = proc{ppid: ppid, state: f[0][0], name: s[open+1 : end]}
	}
	var out []string
	for pid, pr := range procs {
		if pr.state != 'Z' {
			continue
		}
		for up := pr.ppid; up > 1; up = procs[up].ppid {
			if up == root {
				out = append(out, fmt.Sprintf("%d %s", pid, pr.name))
				break
			}
			if _, ok := procs[up]; !ok {
				break
			}
		}
	}
	return out
}

// exit waits for keel run to exit and returns its exit code.
func (p *pid1) exit() int {
	p.t.Helper()
	return waitExit(p.t, p.cmd)
}

func TestRunAsPID1ProbesReloadAndDrain(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	port := freePort(t)
	cfg := filepath.Join(dir, "keel.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: web
    script: %s
    instances: 2
    listen: ["127.0.0.1:%d"]
    ready: notify
    kill_timeout: 10s
    env: {KEEL_E2E_APP: guarded, GATE: %s}
`, os.Args[0], port, gate)), 0o644)
	p := e.startPID1(cfg, freePort(t))

	// Not ready yet: the instances wait for the gate.
	p.want("/livez", 200)
	if body := p.want("/startupz", 503); !strings.Contains(body, `"app":"web"`) || !strings.Contains(body, "starting") {
		t.Fatalf("/startupz before ready says %s", body)
	}
	if body := p.want("/readyz", 503); !strings.Contains(body, `"ready":0,"need":2`) {
		t.Fatalf("/readyz before ready says %s", body)
	}
	p.noZombies()

	os.WriteFile(gate, nil, 0o644)
	poll.Until(t, 20*time.Second, "/readyz to say 200", func() bool { c, _, _ := p.get("/readyz"); return c == 200 })
	p.want("/startupz", 200)
	p.noZombies()

	// A rolling reload from inside the namespace, under load, with the
	// kubelet's readiness probe watching.
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var probes, bad []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c, body, err := p.get("/readyz")
			probes = append(probes, strconv.Itoa(c))
			if c != 200 {
				bad = append(bad, fmt.Sprintf("%d %s %v", c, body, err))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	loaded := make(chan *load.Result, 1)
	loadErr := make(chan error, 1)
	go func() {
		r, err := load.Run(ctx, load.Config{URL: url, Conns: 16, Duration: time.Minute})
		loaded <- r
		loadErr <- err
	}()
	before := e.pids(p, "web")
	p.keel("reload", "web")
	after := e.pids(p, "web")
	for pid := range after {
		if before[pid] {
			t.Fatalf("keel reload kept pid %d: before %v, after %v", pid, before, after)
		}
	}
	time.Sleep(500 * time.Millisecond) // load after the reload, too (not a synchronisation)
	cancel()
	wg.Wait()
	r, err := <-loaded, <-loadErr
	if err != nil {
		t.Fatal(err)
	}
	failed := int64(0)
	for _, n := range r.Failed {
		failed += n
	}
	t.Logf("reload under load: %d requests, %d failed, %d readiness probes", r.Requests, failed, len(probes))
	if failed != 0 || r.OK == 0 {
		t.Fatalf("the reload failed requests: %+v", r)
	}
	if len(bad) > 0 || len(probes) == 0 {
		t.Fatalf("/readyz left 200 during the reload: %v", bad)
	}
	p.noZombies()

	// SIGTERM while requests are in flight: /readyz is 503 at once, the
	// requests are answered, every app stops cleanly, keel exits 0.
	type answer struct {
		code int
		err  error
	}
	answers := make(chan answer, 4)
	for i := 0; i < 4; i++ {
		go func() {
			resp, err := probeClient.Get(url + "slow")
			if err != nil {
				answers <- answer{0, err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, nil}
		}()
	}
	poll.Until(t, 10*time.Second, "4 slow requests in flight", func() bool {
		return strings.Count(p.out.String(), "slow request in flight") >= 4
	})
	syscall.Kill(p.pid, syscall.SIGTERM)
	var last string
	if !poll.Within(time.Second, func() bool {
		c, body, err := p.get("/readyz")
		last = fmt.Sprintf("%d %s %v", c, body, err)
		return c == 503 && strings.Contains(body, "stopping")
	}) {
		t.Fatalf("/readyz after SIGTERM: %s", last)
	}
	p.want("/livez", 200) // still alive while it drains
	for i := 0; i < 4; i++ {
		if a := <-answers; a.code != 200 {
			t.Fatalf("an in-flight request got %d %v during the drain", a.code, a.err)
		}
	}
	if code := p.exit(); code != 0 {
		t.Fatalf("keel run exited %d after SIGTERM; output:\n%s", code, tail(p.out.String(), 4000))
	}
	if out := p.out.String(); !strings.Contains(out, "every app stopped cleanly") {
		t.Fatalf("keel run did not say every app stopped cleanly:\n%s", tail(out, 4000))
	}
	for pid := range after {
		if alive(pid) {
			t.Fatalf("pid %d outlived keel run", pid)
		}
	}
}

// pids are the app's instance pids, from `keel ls` inside the namespace
// (so they are the namespace's pids, translated back through NSpid).
func (e *env) pids(p *pid1, app string) map[int]bool {
	e.t.Helper()
	out := p.keel("ls", "--json")
	var l []struct {
		App string `json:"app"`
		Pid int    `json:"pid"`
	}
	if err := jsonUnmarshal(out, &l); err != nil {
		e.t.Fatalf("ls --json: %v: %s", err, out)
	}
	m := map[int]bool{}
	for _, in := range l {
		if in.App == app && in.Pid != 0 {
			m[hostPid(e.t, p.pid, in.Pid)] = true
		}
	}
	return m
}

// hostPid finds the test's pid of the process that is nsPid in the
// namespace whose PID 1 is root.
func hostPid(t *testing.T, root, nsPid int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "NSpid:" && f[2] == strconv.Itoa(nsPid) {
				pid, _ := strconv.Atoi(f[1])
				if under(pid, root) {
					return pid
				}
			}
		}
	}
	t.Fatalf("no process is pid %d in keel run's namespace", nsPid)
	return 0
}

// under says whether pid descends from root.
func under(pid, root int) bool {
	for pid > 1 {
		if pid == root {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		pid, _ = strconv.Atoi(f[1])
	}
	return false
}

func TestRunAsPID1CrashLoopIsNotReady(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "keel.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apps:
  - name: web
    script: %[1]s
    listen: ["127.0.0.1:%[2]d"]
    ready: notify
    env: {KEEL_E2E_APP: serve}
  - name: bad
    script: %[1]s
    max_restarts: 2
    restart_delay: 10ms
    env: {KEEL_E2E_APP: crash}
`, os.Args[0], port)), 0o644)
	p := e.startPID1(cfg, freePort(t))
	var body string
	poll.Until(t, 20*time.Second, "/readyz to name the errored app", func() bool {
		var c int
		c, body, _ = p.get("/readyz")
		return c == 503 && strings.Contains(body, `"app":"bad"`) && strings.Contains(body, "bad:0 errored")
	})
	if strings.Contains(body, `"app":"web"`) {
		t.Fatalf("/readyz holds web against the pod too: %s", body)
	}
	p.noZombies()
	syscall.Kill(p.pid, syscall.SIGTERM)
	if code := p.exit(); code == 0 {
		t.Fatalf("keel run exited 0 though app bad was errored; output:\n%s", tail(p.out.String(), 4000))
	}
	out := p.out.String()
	if !strings.Contains(out, `"msg":"app was errored","app":"bad","instance":0`) || !strings.Contains(out, "bad:0 errored") {
		t.Fatalf("keel run did not say which app was errored:\n%s", tail(out, 4000))
	}
}
