package keeper

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

// orphanApp is an app whose every instance leaves an orphan while it
// runs — a subshell starts a setsid sleep and exits, so the sleep goes to
// the keeper, the nearest subreaper — and writes the orphan's pid to
// dir/<instance>.pid.
func orphanApp(name, dir string) *spec.App {
	a := &spec.App{Name: name, Script: "/bin/sh", Interpreter: "none",
		Args: []string{"-c", `(setsid sleep 60 & echo $! > "` + dir + `/$KEEL_INSTANCE.pid.tmp"; mv "` + dir + `/$KEEL_INSTANCE.pid.tmp" "` + dir + `/$KEEL_INSTANCE.pid"); exec sleep 60`}}
	a.Normalize()
	return a
}

// orphanOf waits for the pid file of instance i and returns that process.
func orphanOf(t *testing.T, dir string, i int) proc.Identity {
	t.Helper()
	path := filepath.Join(dir, strconv.Itoa(i)+".pid")
	var b []byte
	poll.Until(t, eventTimeout, "instance "+strconv.Itoa(i)+" to write "+path, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil
	})
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %q", path, b)
	}
	id, err := proc.Identify(pid)
	if err != nil {
		t.Fatalf("the orphan %d of instance %d: %v", pid, i, err)
	}
	return id
}

// The instances of an app share one keeper process, each app has its
// own, and each instance's end takes its own orphans along and nobody
// else's; a dead keeper costs its own app's instances only.
func TestInstancesShareTheirAppsKeeper(t *testing.T) {
	h := newHarness(t)
	s := h.spawner(nil)
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := orphanApp("t-a", dirA), orphanApp("t-b", dirB)
	a0, a1, b0 := h.spawn(s, a, 0), h.spawn(s, a, 1), h.spawn(s, b, 0)
	if a0.st.KeeperPid != a1.st.KeeperPid {
		t.Fatalf("the instances of one app run under keepers %d and %d", a0.st.KeeperPid, a1.st.KeeperPid)
	}
	if b0.st.KeeperPid == a0.st.KeeperPid {
		t.Fatalf("two apps share keeper %d", b0.st.KeeperPid)
	}
	oa0, oa1, ob0 := orphanOf(t, dirA, 0), orphanOf(t, dirA, 1), orphanOf(t, dirB, 0)
	// Once its subshell exits, each orphan is its keeper's child.
	for _, o := range []proc.Identity{oa0, oa1, ob0} {
		poll.Until(t, eventTimeout, "orphan "+strconv.Itoa(o.Pid)+" to be a keeper's child", func() bool {
			ppid := parentOf(t, o.Pid)
			return ppid == a0.st.KeeperPid || ppid == b0.st.KeeperPid
		})
	}

	finish(t, a0)
	gone(t, oa0)
	if !oa1.Running() || !ob0.Running() {
		t.Fatal("stopping instance 0 killed the orphan of another instance")
	}

	// Released, instance 0's keeper removes its files.
	poll.Until(t, eventTimeout, "instance 0's files to go after its release", func() bool {
		_, err := os.Stat(pathsFor(h.home, a0.st.ID).state)
		return os.IsNotExist(err)
	})

	// A keeper that dies takes its app's instances with it, and no other.
	if err := syscall.Kill(a1.st.KeeperPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ex := release(t, a1); ex.Reason != ReasonKeeperLost {
		t.Fatalf("instance 1 after its keeper died: %v, want %q", ex, ReasonKeeperLost)
	}
	app1 := proc.Identity{Pid: a1.st.Pid, Start: a1.st.PidStart}
	if app1.Running() {
		t.Fatalf("instance 1 (%d) outlived its keeper", app1.Pid)
	}
	b0app := proc.Identity{Pid: b0.st.Pid, Start: b0.st.PidStart}
	if !b0app.Running() || !ob0.Running() {
		t.Fatal("the other app's instance or its orphan died with a keeper not theirs")
	}
	for drained := false; !drained; {
		select {
		case ev := <-b0.Events():
			if ev.Kind == supervisor.EventExit {
				t.Fatalf("the other app's instance exited: %v", ev.Exit)
			}
		default:
			drained = true
		}
	}
	// The dead keeper's orphan is beyond keel now (its subreaper died):
	// only a cgroup would reach it.
	syscall.Kill(oa1.Pid, syscall.SIGKILL)

	// The next instance of the app gets a keeper process of its own again.
	a2 := h.spawn(s, a, 1)
	if a2.st.KeeperPid == a1.st.KeeperPid || a2.st.KeeperPid == b0.st.KeeperPid {
		t.Fatalf("a new instance went to keeper %d", a2.st.KeeperPid)
	}
	finish(t, a2)
	finish(t, b0)
	gone(t, ob0)
}

// parentOf is pid's parent.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// An idle instance holds no goroutine in the daemon: the Spawner's
// wirePoller reads every keeper connection, and what it reads is handled
// by a goroutine that runs only while something is queued.
func TestIdleInstancesHoldNoGoroutineInTheDaemon(t *testing.T) {
	h := newHarness(t)
	s := h.spawnerWith(SpawnerConfig{NoStandby: true})
	a := app("sleep")
	first := h.spawn(s, a, 0)
	waitGoroutines := func(what string, ok func(n int) bool) int {
		var n int
		poll.Until(t, eventTimeout, what, func() bool {
			n = runtime.NumGoroutine()
			return ok(n)
		})
		return n
	}
	// Settled: the goroutines that start with the first keeper are there.
	before := runtime.NumGoroutine()
	const more = 12
	ps := []*process{first}
	for i := 1; i <= more; i++ {
		ps = append(ps, h.spawn(s, a, i))
	}
	waitGoroutines(fmt.Sprintf("at most %d more goroutines for %d more instances (%d before)", more/2, more, before),
		func(n int) bool { return n < before+more/2 })
	for _, p := range ps {
		finish(t, p)
	}
}

// The daemon's reading of one keeper never waits for another process: a
// process whose lock is held (as by a write to a keeper that does not
// read) stalls only itself.
func TestOneStalledProcessStallsNoOther(t *testing.T) {
	h := newHarness(t)
	s := h.spawnerWith(SpawnerConfig{NoStandby: true})
	a, b := app("sleep"), app("sleep")
	b.Name = "t-other"
	pa := h.spawn(s, a, 0)
	pb := h.spawn(s, b, 0)
	// The keeper of a tells of its app's death while pa is held.
	pa.mu.Lock()
	held := true
	defer func() {
		if held {
			pa.mu.Unlock()
		}
	}()
	syscall.Kill(pa.st.Pid, syscall.SIGKILL)
	gone(t, proc.Identity{Pid: pa.st.Pid, Start: pa.st.PidStart})
	// Then b's exit comes through all the same.
	pb.background(func(sent func()) {
		defer sent()
		if _, err := pb.call(command{Cmd: cmdStop, Signal: "SIGKILL"}, false); err != nil {
			t.Errorf("stopping b: %v", err)
		}
	})
	if ex := release(t, pb); ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("b's exit %v", ex)
	}
	pa.mu.Unlock()
	held = false
	if ex := release(t, pa); ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("a's exit %v", ex)
	}
}

// The daemon holds no goroutine (and so no thread blocked in wait4) for
// each keeper process it started: one hears of their exits at SIGCHLD.
// Each app has a keeper process of its own.
func TestKeeperProcessesHoldNoGoroutineInTheDaemon(t *testing.T) {
	h := newHarness(t)
	s := h.spawnerWith(SpawnerConfig{NoStandby: true})
	first := h.spawn(s, app("sleep"), 0)
	before := runtime.NumGoroutine()
	const apps = 8
	ps := []*process{first}
	for i := range apps {
		a := app("sleep")
		a.Name = fmt.Sprintf("t-app%d", i)
		ps = append(ps, h.spawn(s, a, 0))
	}
	poll.Until(t, eventTimeout, fmt.Sprintf("at most %d more goroutines for %d more keeper processes (%d before)", apps/2, apps, before),
		func() bool { return runtime.NumGoroutine() < before+apps/2 })
	for _, p := range ps {
		finish(t, p)
	}
	// Their exits are heard, and each is reaped: no zombie is left.
	for _, p := range ps {
		k := proc.Identity{Pid: p.st.KeeperPid, Start: p.st.KeeperStart}
		gone(t, k)
		poll.Until(t, eventTimeout, fmt.Sprintf("keeper %d to be reaped", k.Pid), func() bool {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", k.Pid))
			return err != nil
		})
	}
}

// startGateVar names, in a test app's env, a FIFO at which the fake Node
// channel (fakeNodeIPC) holds instance 1's start.
const startGateVar = "KEEL_TEST_START_GATE"

// One more instance that its app's keeper process is slow to start (that
// keeper is short of CPU, say, while a thousand instances log flat out)
// still starts: the daemon waits hostStartFactor times StartTimeout for a
// keeper that is alive, not StartTimeout.
func TestASlowStartInTheAppsKeeperStillStarts(t *testing.T) {
	h := newHarness(t)
	const timeout = time.Second
	s := h.spawnerWith(SpawnerConfig{StartTimeout: timeout})
	gate := filepath.Join(t.TempDir(), "gate")
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	a := app("sleep")
	a.Ready = spec.ReadyMessage // so the start goes through fakeNodeIPC
	a.Env[startGateVar] = gate
	p0 := h.spawn(s, a, 0)

	type spawned struct {
		p   supervisor.Process
		err error
	}
	done := make(chan spawned, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		p, err := s.Spawn(ctx, supervisor.SpawnRequest{App: a, Instance: 1})
		done <- spawned{p, err}
	}()
	// The FIFO has a reader once the keeper, in instance 1's start, is at
	// the gate; the start then waits for the writer's close.
	w := -1
	poll.Until(t, eventTimeout, "instance 1's start to reach the gate", func() bool {
		select {
		case r := <-done:
			t.Fatalf("the start ended before the gate: %v", r.err)
		default:
		}
		fd, err := unix.Open(gate, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return false // ENXIO: no reader yet
		}
		w = fd
		return true
	})
	// Not a wait for a condition: the start must take longer than
	// StartTimeout, which is what is under test.
	time.Sleep(2 * timeout)
	unix.Close(w)
	r := <-done
	if r.err != nil {
		t.Fatalf("the slow start failed: %v", r.err)
	}
	p1 := h.track(r.p.(*process))
	if p1.st.KeeperPid != p0.st.KeeperPid {
		t.Fatalf("instance 1 ran under keeper %d, not its app's %d", p1.st.KeeperPid, p0.st.KeeperPid)
	}
	if !(proc.Identity{Pid: p1.st.Pid, Start: p1.st.PidStart}).Running() {
		t.Fatal("instance 1's app does not run")
	}
	finish(t, p1)
	finish(t, p0)
}
