package keeper

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/proc"

	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

// silentKeeper is a keeper that says hello and then reads commands
// without ever answering one: a wedged keeper.
type silentKeeper struct {
	ln   net.Listener
	conn net.Conn
	cmds chan command
	// accept waits for the daemon side's connection and says hello.
	accept func()
}

func startSilentKeeper(t *testing.T, home string, st State) *silentKeeper {
	t.Helper()
	if err := ensureDirs(home); err != nil {
		t.Fatal(err)
	}
	pp := pathsFor(home, st.ID)
	ln, err := listenUnix(pp.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pp.remove() })
	k := &silentKeeper{ln: ln, cmds: make(chan command, 16)}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	t.Cleanup(func() {
		if k.conn != nil {
			k.conn.Close()
		}
	})
	k.accept = func() {
		c, ok := <-accepted
		if !ok {
			t.Fatal("the daemon side never connected")
		}
		k.conn = c
		b, _ := json.Marshal(message{Type: msgHello, State: &st})
		if _, err := c.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				var cmd command
				if json.Unmarshal(sc.Bytes(), &cmd) == nil {
					k.cmds <- cmd
				}
			}
			close(k.cmds)
		}()
	}
	return k
}

func (k *silentKeeper) send(t *testing.T, m message) {
	t.Helper()
	b, _ := json.Marshal(m)
	if _, err := k.conn.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

func (k *silentKeeper) next(t *testing.T, want string) command {
	t.Helper()
	select {
	case c, ok := <-k.cmds:
		if !ok {
			t.Fatalf("the connection ended before %s", want)
		}
		if c.Cmd != want {
			t.Fatalf("command %q, want %q", c.Cmd, want)
		}
		return c
	case <-time.After(eventTimeout):
		t.Fatalf("no %s command", want)
		return command{}
	}
}

type oneApp struct{ rec supervisor.AppRecord }

func (s oneApp) SaveApp(supervisor.AppRecord) error        { return nil }
func (s oneApp) DeleteApp(string) error                    { return nil }
func (s oneApp) LoadApps() ([]supervisor.AppRecord, error) { return []supervisor.AppRecord{s.rec}, nil }

// A keeper that never answers must not freeze the supervisor: Stop and
// Release return at once, and listing keeps working while the stop waits.
func TestKeeperThatNeverAnswers(t *testing.T) {
	home := t.TempDir()
	// Pid and keeper pid name no running process (start time 1), so
	// nothing real is ever signalled.
	st := State{
		Version: protocolVersion, ID: newID(), App: "web", Instance: 0,
		Pid: 1<<22 - 3, PidStart: 1, Started: time.Now(), KeeperPid: 1<<22 - 2, KeeperStart: 1,
		Ready: true,
	}
	k := startSilentKeeper(t, home, st)
	// Commands wait for their reply far longer than the test runs: a
	// Stop that waited for it would never return.
	sp := NewSpawner(SpawnerConfig{Home: home, NoStandby: true, CallTimeout: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&testLog{t: t}, nil))})
	defer sp.Close()
	app := &spec.App{Name: "web", Script: "/bin/true"}
	app.Normalize()
	sup := supervisor.New(supervisor.Config{Spawner: sp,
		Store: oneApp{supervisor.AppRecord{Spec: app, Instances: []supervisor.InstanceRecord{{Instance: 0}}}}})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- sup.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	k.accept()

	list := func() []supervisor.InstanceInfo {
		t.Helper()
		lctx, lcancel := context.WithTimeout(context.Background(), eventTimeout)
		defer lcancel()
		l, err := sup.List(lctx)
		if err != nil {
			t.Fatalf("List while the keeper does not answer: %v", err)
		}
		return l
	}
	if !poll.Within(eventTimeout, func() bool {
		l := list()
		return len(l) == 1 && l[0].Status == supervisor.Online
	}) {
		t.Fatalf("the survivor was not adopted: %+v", list())
	}

	stopped := make(chan error, 1)
	go func() {
		_, err := sup.Stop(context.Background(), spec.Target{App: "web", Instance: -1})
		stopped <- err
	}()
	stop := k.next(t, cmdStop)
	if stop.Signal != "SIGTERM" {
		t.Fatalf("stop with %s", stop.Signal)
	}
	// The keeper sits on the command; the supervisor answers all the same.
	for i := 0; i < 3; i++ {
		if l := list(); len(l) != 1 || l[0].Status != supervisor.Stopping {
			t.Fatalf("while the keeper does not answer: %+v", l)
		}
	}
	// The app exits; the keeper never answers the stop, nor the release.
	code := 0
	k.send(t, message{Type: msgExit, Exit: &spec.Exit{Code: &code, At: time.Now()}})
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Stop did not return after the exit")
	}
	k.next(t, cmdRelease)
	if l := list(); len(l) != 1 || l[0].Status != supervisor.Stopped {
		t.Fatalf("after the exit: %+v", l)
	}
}

// A keeper that takes a stop and then neither answers nor reports the
// exit by the end of kill_timeout and the call timeout is killed, and so
// is its app: the stop ends with the exit "keeper lost".
func TestKeeperThatNeverAnswersAStopIsKilled(t *testing.T) {
	home := t.TempDir()
	start := func(setpgid bool) (*exec.Cmd, proc.Identity) {
		c := exec.Command("/bin/sleep", "60")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: setpgid}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		id, err := proc.Identify(c.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { c.Wait(); close(waited) }()
		t.Cleanup(func() { c.Process.Kill(); <-waited })
		return c, id
	}
	keeperCmd, keeperID := start(false) // stands in for the wedged keeper
	_, appID := start(true)
	st := State{
		Version: protocolVersion, ID: newID(), App: "web", Instance: 0,
		Pid: appID.Pid, PidStart: appID.Start, Started: time.Now(),
		KeeperPid: keeperID.Pid, KeeperStart: keeperID.Start, Ready: true,
	}
	k := startSilentKeeper(t, home, st)
	// Once the stand-in is killed, its socket refuses connections, as a
	// dead keeper's does.
	go func() { keeperCmd.Process.Wait(); k.ln.Close() }()
	sp := NewSpawner(SpawnerConfig{Home: home, NoStandby: true, CallTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&testLog{t: t}, nil))})
	defer sp.Close()
	app := &spec.App{Name: "web", Script: "/bin/true", KillTimeout: spec.Duration(100 * time.Millisecond)}
	app.Normalize()
	sup := supervisor.New(supervisor.Config{Spawner: sp,
		Store: oneApp{supervisor.AppRecord{Spec: app, Instances: []supervisor.InstanceRecord{{Instance: 0}}}}})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- sup.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	k.accept()

	sctx, scancel := context.WithTimeout(context.Background(), eventTimeout)
	defer scancel()
	l, err := sup.Stop(sctx, spec.Target{App: "web", Instance: -1})
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if len(l) != 1 || l[0].Status != supervisor.Stopped || l[0].LastExit == nil || l[0].LastExit.Reason != ReasonKeeperLost {
		t.Fatalf("after the stop: %+v", l)
	}
	if keeperID.Running() || appID.Running() {
		t.Fatalf("keeper running %v, app running %v", keeperID.Running(), appID.Running())
	}
}
