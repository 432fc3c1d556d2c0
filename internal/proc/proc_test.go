package proc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/cgroup/cgrouptest"
	"github.com/keel-run/keel/internal/proc"
)

// helperArg makes the test binary run a helper instead of the tests.
const helperArg = "__helper"

// helpers are the programs the tests run as children, by name.
var helpers = map[string]func(args []string) int{
	"report":     report,
	"sleep":      func([]string) int { time.Sleep(time.Hour); return 0 },
	"exit":       func(args []string) int { n, _ := strconv.Atoi(args[0]); return n },
	"grandchild": grandchild,
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case proc.ExecArg:
			os.Exit(proc.ExecMain(os.Args[2:]))
		case helperArg:
			os.Exit(helpers[os.Args[2]](os.Args[3:]))
		}
	}
	goleak.VerifyTestMain(m)
}

// childReport is what the "report" helper prints about itself.
type childReport struct {
	Pid        int            `json:"pid"`
	Env        []string       `json:"env"`
	Listening  []int          `json:"listening"`  // fds from 3 that are listening sockets
	OpenAfter  []string       `json:"open_after"` // other open fds above 2
	Activation map[string]int `json:"activation"` // go-systemd's view: name → port
	ActErr     string         `json:"act_err"`
}

func report([]string) int {
	r := childReport{Pid: os.Getpid(), Env: os.Environ(), Activation: map[string]int{}}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		// Whatever this process opened itself is close-on-exec; what it
		// inherited across the exec cannot be.
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fd < 3 || err != nil || fl&unix.FD_CLOEXEC != 0 {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
			r.Listening = append(r.Listening, fd)
		} else {
			target, _ := os.Readlink("/proc/self/fd/" + e.Name())
			r.OpenAfter = append(r.OpenAfter, e.Name()+"->"+target)
		}
	}
	// Print before activation takes the fds over.
	ls, err := activation.ListenersWithNames()
	if err != nil {
		r.ActErr = err.Error()
	}
	for name, l := range ls {
		r.Activation[name] = l[0].Addr().(*net.TCPAddr).Port
		l[0].Close()
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func grandchild(args []string) int {
	exe, _ := os.Executable()
	c := exec.Command(exe, helperArg, "sleep")
	if err := c.Start(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println(c.Process.Pid)
	if len(args) > 0 && args[0] == "exit" {
		return 0
	}
	time.Sleep(time.Hour)
	return 0
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// start starts a process and makes sure it is gone when the test ends.
func start(t *testing.T, o proc.Options) *proc.Process {
	t.Helper()
	p, err := proc.Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		waitExit(t, p)
	})
	return p
}

func waitExit(t *testing.T, p *proc.Process) proc.Exit {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d did not exit", p.Pid())
		return proc.Exit{}
	}
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func listener(t *testing.T) (*os.File, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, l.Addr().(*net.TCPAddr).Port
}

func TestChildSeesExactlyItsEnvAndListenFds(t *testing.T) {
	// What a child has open whatever we pass (the race runtime opens some).
	baseline := runReport(t, proc.Options{Argv: []string{self(t), helperArg, "report"}, Env: childEnv()})

	f1, port1 := listener(t)
	f2, port2 := listener(t)
	r, w := pipe(t)
	env := append(childEnv(), "FOO=bar baz", "PATH="+os.Getenv("PATH"), "LISTEN_PID=1", "LISTEN_FDS=9")
	p := start(t, proc.Options{
		Argv:        []string{self(t), helperArg, "report"},
		Env:         env,
		Stdout:      w,
		ExtraFiles:  []*os.File{f1, f2},
		ListenNames: []string{"web", "admin"},
		Helper:      self(t),
	})
	w.Close()
	var got childReport
	if err := json.NewDecoder(r).Decode(&got); err != nil {
		t.Fatalf("reading the child's report: %v", err)
	}
	if e := waitExit(t, p); e.Code != 0 {
		t.Fatalf("child exited with %v", e)
	}
	if got.Pid != p.Pid() {
		t.Errorf("child pid %d, Start said %d", got.Pid, p.Pid())
	}
	want := append(childEnv(), "FOO=bar baz", "PATH="+os.Getenv("PATH"), "LISTEN_FDS=2",
		"LISTEN_FDNAMES=web:admin", "LISTEN_PID="+strconv.Itoa(p.Pid()))
	slices.Sort(want)
	slices.Sort(got.Env)
	if !slices.Equal(got.Env, want) {
		t.Errorf("child env\n got %q\nwant %q", got.Env, want)
	}
	if !slices.Equal(got.Listening, []int{3, 4}) {
		t.Errorf("listening fds %v, want [3 4]", got.Listening)
	}
	if extra := without(got.OpenAfter, baseline.OpenAfter); len(extra) != 0 {
		t.Errorf("child has other fds open: %v", extra)
	}
	if got.ActErr != "" {
		t.Errorf("go-systemd activation: %s", got.ActErr)
	}
	if got.Activation["web"] != port1 || got.Activation["admin"] != port2 {
		t.Errorf("go-systemd activation saw %v, want web:%d admin:%d", got.Activation, port1, port2)
	}
}

// childEnv is what every child's environment needs in these tests: the
// race runtime would otherwise linger a second at exit.
func childEnv() []string { return []string{"GORACE=atexit_sleep_ms=0"} }

// runReport runs the "report" helper and returns what it said.
func runReport(t *testing.T, o proc.Options) childReport {
	t.Helper()
	r, w := pipe(t)
	o.Stdout = w
	p := start(t, o)
	w.Close()
	var got childReport
	if err := json.NewDecoder(r).Decode(&got); err != nil {
		t.Fatalf("reading the child's report: %v", err)
	}
	if e := waitExit(t, p); e.Code != 0 {
		t.Fatalf("child exited with %v", e)
	}
	if got.Pid != p.Pid() {
		t.Errorf("child pid %d, Start said %d", got.Pid, p.Pid())
	}
	return got
}

// without returns the fds of a ("fd->target") whose fd number is not in b.
func without(a, b []string) []string {
	var out []string
	for _, x := range a {
		fd, _, _ := strings.Cut(x, "->")
		if !slices.ContainsFunc(b, func(y string) bool { return strings.HasPrefix(y, fd+"->") }) {
			out = append(out, x)
		}
	}
	return out
}

func TestWithoutListenFdsNoHelperAndNoListenEnv(t *testing.T) {
	got := runReport(t, proc.Options{
		Argv: []string{self(t), helperArg, "report"},
		Env:  append(childEnv(), "A=1", "LISTEN_FDS=1"),
	})
	if want := append(childEnv(), "A=1"); !slices.Equal(got.Env, want) {
		t.Errorf("env %q, want %q", got.Env, want)
	}
	if len(got.Listening) != 0 {
		t.Errorf("listening fds %v", got.Listening)
	}
}

func TestArgv0IsFoundInTheGivenPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(self(t), filepath.Join(dir, "keel-test-helper")); err != nil {
		t.Fatal(err)
	}
	p := start(t, proc.Options{
		Argv: []string{"keel-test-helper", helperArg, "exit", "7"},
		Env:  append(childEnv(), "PATH=/nonexistent:"+dir),
	})
	if e := waitExit(t, p); e.Code != 7 || e.Signal != 0 {
		t.Fatalf("exit %v, want code 7", e)
	}
	// Relative to Dir, not to our working directory.
	p = start(t, proc.Options{
		Argv: []string{"./keel-test-helper", helperArg, "exit", "8"},
		Env:  childEnv(),
		Dir:  dir,
	})
	if e := waitExit(t, p); e.Code != 8 {
		t.Fatalf("exit %v, want code 8", e)
	}
}

func TestStartErrorsLeaveNothingRunning(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, _ := listener(t)
	cases := []struct {
		name string
		o    proc.Options
		want error
	}{
		{"not in PATH", proc.Options{Argv: []string{"keel-no-such-program"}, Env: []string{"PATH=" + dir}}, exec.ErrNotFound},
		{"missing file", proc.Options{Argv: []string{filepath.Join(dir, "missing")}}, os.ErrNotExist},
		{"bad dir", proc.Options{Argv: []string{self(t)}, Dir: filepath.Join(dir, "missing")}, os.ErrNotExist},
		{"bad fd name", proc.Options{Argv: []string{self(t)}, ExtraFiles: []*os.File{f}, ListenNames: []string{"a:b"}, Helper: self(t)}, nil},
		{"exec fails after the helper", proc.Options{Argv: []string{garbage}, ExtraFiles: []*os.File{f}, ListenNames: []string{"web"}, Helper: self(t)}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := children(t)
			p, err := proc.Start(c.o)
			if err == nil {
				_ = p.Signal(syscall.SIGKILL)
				waitExit(t, p)
				t.Fatal("Start succeeded")
			}
			t.Logf("error: %v", err)
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v is not %v", err, c.want)
			}
			if after := children(t); !slices.Equal(before, after) {
				t.Errorf("children before %v, after %v", before, after)
			}
		})
	}
}

// children lists this process's children (live or zombie).
func children(t *testing.T) []string {
	t.Helper()
	var all []string
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		if err != nil {
			continue
		}
		all = append(all, strings.Fields(string(b))...)
	}
	slices.Sort(all)
	return all
}

func TestExitCodeAndSignal(t *testing.T) {
	p := start(t, proc.Options{Argv: []string{self(t), helperArg, "exit", "3"}, Env: childEnv()})
	e := waitExit(t, p)
	if e.Code != 3 || e.Signal != 0 || e.At.IsZero() {
		t.Fatalf("exit %+v, want code 3", e)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit: %v, want os.ErrProcessDone", err)
	}

	p = start(t, proc.Options{Argv: []string{self(t), helperArg, "sleep"}})
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, p); e.Signal != syscall.SIGKILL || e.Code != -1 {
		t.Fatalf("exit %+v, want SIGKILL", e)
	}
}

// readPid reads the grandchild's pid that the "grandchild" helper prints.
func readPid(t *testing.T, r *os.File) proc.Identity {
	t.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("reading grandchild pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("grandchild said %q", line)
	}
	id, err := proc.Identify(pid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func waitGone(t *testing.T, id proc.Identity) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := id.WaitGone(ctx); err != nil {
		t.Fatalf("pid %d still there: %v", id.Pid, err)
	}
	if id.Running() {
		t.Fatalf("pid %d still running", id.Pid)
	}
}

func TestGroupSignalReachesGrandchildren(t *testing.T) {
	r, w := pipe(t)
	p := start(t, proc.Options{Argv: []string{self(t), helperArg, "grandchild"}, Env: childEnv(), Stdout: w})
	w.Close()
	gc := readPid(t, r)
	if !gc.Running() {
		t.Fatal("grandchild not running")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, p); e.Signal != syscall.SIGTERM {
		t.Fatalf("leader exit %v, want SIGTERM", e)
	}
	waitGone(t, gc)
}

func TestKillGroupOnExit(t *testing.T) {
	r, w := pipe(t)
	p := start(t, proc.Options{
		Argv:            []string{self(t), helperArg, "grandchild", "exit"},
		Env:             childEnv(),
		Stdout:          w,
		KillGroupOnExit: true,
	})
	w.Close()
	gc := readPid(t, r)
	if e := waitExit(t, p); e.Code != 0 {
		t.Fatalf("leader exit %v", e)
	}
	waitGone(t, gc)
}

func TestIdentity(t *testing.T) {
	p := start(t, proc.Options{Argv: []string{self(t), helperArg, "sleep"}})
	id, err := proc.Identify(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	if p.Identity() != id {
		t.Fatalf("Identity %+v, Identify %+v", p.Identity(), id)
	}
	if !id.Running() {
		t.Fatal("a sleeping child is not running?")
	}
	other := proc.Identity{Pid: id.Pid, Start: id.Start + 1}
	if other.Running() {
		t.Fatal("a different start time counts as running")
	}
	// A pid with another start time is someone else's: not signalled.
	if err := other.KillGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := id.WaitGone(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitGone on a live process: %v, want deadline exceeded", err)
	}
	if !id.Running() {
		t.Fatal("KillGroup with a wrong start time killed the process")
	}
	if err := id.KillGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, p); e.Signal != syscall.SIGKILL {
		t.Fatalf("exit %v, want SIGKILL", e)
	}
	if id.Running() {
		t.Fatal("reaped process counts as running")
	}
	if err := id.KillGroup(syscall.SIGKILL); err != nil {
		t.Fatalf("KillGroup of a gone group: %v", err)
	}
}

// With a Cgroup, the leader's exit ends what left both its process group
// and the caller's tree: a child that called setsid and was orphaned.
func TestCgroupOnExit(t *testing.T) {
	g := cgrouptest.Scratch(t, "proc-test")
	if _, err := os.Stat(filepath.Join(g.Dir(), "cgroup.kill")); err != nil {
		t.Skipf("no cgroup.kill (Linux before 5.14?): %v", err)
	}
	r, w := pipe(t)
	// sh is not a group leader in its own pipeline, so setsid execs in
	// place and $! is the sleep's pid.
	p := start(t, proc.Options{
		Argv:   []string{"/bin/sh", "-c", "setsid sleep 60 & echo $!"},
		Stdout: w,
		Cgroup: g,
	})
	w.Close()
	orphan := readPid(t, r)
	if e := waitExit(t, p); e.Code != 0 {
		t.Fatalf("leader exit %v", e)
	}
	// Done is closed only once the group is empty.
	if orphan.Running() {
		t.Fatalf("the setsid child %d outlived the leader's exit", orphan.Pid)
	}
	if pop, err := g.Populated(); err != nil || pop {
		t.Fatalf("the cgroup is still populated (%v, %v)", pop, err)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
}
