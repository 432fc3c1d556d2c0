package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const helperEnv = "KEEL_PROCSTAT_HELPER"

// TestMain doubles the test binary as the helper processes the tests
// measure; see helper.
func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helper(h))
	}
	goleak.VerifyTestMain(m)
}

// helper runs one helper process. Each prints "ready" once it is in the
// state the test measures, and exits when its stdin closes.
func helper(name string) int {
	switch name {
	case "idle":
		fmt.Println("ready")
	case "alloc":
		mib, _ := strconv.Atoi(os.Getenv("KEEL_ALLOC_MIB"))
		mem := make([]byte, mib<<20)
		for i := 0; i < len(mem); i += 4096 {
			mem[i] = 1 // touch every page so it is resident
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		return int(mem[len(mem)/2]) - 1 // keep mem alive until here
	case "spin":
		go func() {
			for x := 0; ; x++ {
				if x < 0 {
					fmt.Println(x)
				}
			}
		}()
		fmt.Println("ready")
	case "parent":
		// A wrapper, like a shell: the child does the work and shares
		// our stdin and stdout.
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=alloc")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", name)
		return 2
	}
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// child is a running helper process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when Wait returned
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop closes the child's stdin and waits for it to exit; it kills the
// child if it has not exited within a deadline. Calling it again is a
// no-op.
func (c *child) stop(t testing.TB) {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		t.Errorf("helper %d did not exit on EOF; killed", c.pid())
	}
}

// startHelper starts a helper process and waits until it prints "ready".
func startHelper(t testing.TB, name string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	// Under -race a process sleeps a second at exit unless told not to.
	cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("helper said %q", line)
		}
		ready <- err
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() { c.stop(t) })
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("helper %s: %v", name, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("helper %s not ready within 20s", name)
	}
	return c
}

func TestRSSOfAllocatingChild(t *testing.T) {
	const mib = 64
	c := startHelper(t, "alloc", "KEEL_ALLOC_MIB="+strconv.Itoa(mib))

	rss, err := RSS(c.pid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < mib<<20 {
		t.Errorf("RSS = %d, want >= %d", rss, mib<<20)
	}
	st, ok := NewSampler().Sample([]int{c.pid()})[c.pid()]
	if !ok {
		t.Fatal("Sample left out a live pid")
	}
	if st.RSS < mib<<20 || st.Procs != 1 {
		t.Errorf("Sample = %+v, want RSS >= %d and Procs 1", st, mib<<20)
	}
}

func TestTreeCountsDescendants(t *testing.T) {
	const mib = 64
	c := startHelper(t, "parent", "KEEL_ALLOC_MIB="+strconv.Itoa(mib))

	own, err := RSS(c.pid())
	if err != nil {
		t.Fatal(err)
	}
	if own >= mib<<20 {
		t.Fatalf("the wrapper alone has RSS %d; the test needs it below %d", own, mib<<20)
	}
	tree, err := TreeRSS(c.pid())
	if err != nil {
		t.Fatal(err)
	}
	if tree < own+mib<<20 {
		t.Errorf("TreeRSS = %d, want >= wrapper %d + child %d", tree, own, mib<<20)
	}
	st := NewSampler().Sample([]int{c.pid()})[c.pid()]
	if st.Procs != 2 || st.RSS < mib<<20 {
		t.Errorf("Sample = %+v, want 2 processes and RSS >= %d", st, mib<<20)
	}
}

func TestCPUPercent(t *testing.T) {
	spin := startHelper(t, "spin")
	idle := startHelper(t, "idle")
	pids := []int{spin.pid(), idle.pid()}

	s := NewSampler()
	first := s.Sample(pids)
	if first[spin.pid()].CPU != 0 {
		t.Errorf("first sample CPU = %v, want 0 (no interval yet)", first[spin.pid()].CPU)
	}
	// Sample every 250ms until the spinner shows over half a core; the
	// machine may be busy, so allow many intervals before giving up.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	var last map[int]Stat
	for {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("spinner never passed 50%% CPU; last sample %+v", last)
		}
		last = s.Sample(pids)
		if last[spin.pid()].CPU > 50 {
			break
		}
	}
	if c := last[idle.pid()].CPU; c > 20 {
		t.Errorf("idle helper CPU = %v%%, want near 0", c)
	}
}

func TestVanishedPid(t *testing.T) {
	c := startHelper(t, "idle")
	pid := c.pid()
	s := NewSampler()
	if _, ok := s.Sample([]int{pid})[pid]; !ok {
		t.Fatal("live pid missing")
	}
	c.stop(t)

	got := s.Sample([]int{pid, os.Getpid()})
	if _, ok := got[pid]; ok {
		t.Errorf("exited pid %d still sampled: %+v", pid, got[pid])
	}
	if got[os.Getpid()].RSS <= 0 {
		t.Errorf("own pid: %+v, want RSS > 0", got[os.Getpid()])
	}
	if _, err := RSS(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RSS of exited pid: err = %v, want os.ErrNotExist", err)
	}
	if _, err := TreeRSS(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("TreeRSS of exited pid: err = %v, want os.ErrNotExist", err)
	}
}

func TestReusedPidStartsOver(t *testing.T) {
	self := os.Getpid()
	now := time.Unix(1000, 0)
	s := &Sampler{Now: func() time.Time { return now }}
	s.Sample([]int{self})
	// Pretend the pid belonged to another process with huge CPU time.
	p := s.prev[self]
	p.start++
	p.ticks = 0
	s.prev[self] = p
	now = now.Add(time.Second)
	if cpu := s.Sample([]int{self})[self].CPU; cpu != 0 {
		t.Errorf("CPU across a reused pid = %v, want 0", cpu)
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may set.
	line := "4242 (we (ird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 " +
		"7 3 2 1 20 0 1 0 98765 10000000 321 18446744073709551615 " +
		"1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	ps, err := parseStat(4242, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{ppid: 17, ticks: 7 + 3 + 2 + 1, start: 98765, rssPgs: 321}
	if ps != want {
		t.Errorf("parseStat = %+v, want %+v", ps, want)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2 3", "1 (x) S x 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"} {
		if _, err := parseStat(1, []byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

// BenchmarkSample8 measures one Sample of eight live, idle process trees:
// the daemon's stats loop for eight instances.
func BenchmarkSample8(b *testing.B) {
	pids := make([]int, 8)
	for i := range pids {
		pids[i] = startHelper(b, "idle").pid()
	}
	s := NewSampler()
	s.Sample(pids)
	b.ReportAllocs()
	for b.Loop() {
		if got := s.Sample(pids); len(got) != len(pids) {
			b.Fatalf("sampled %d of %d pids", len(got), len(pids))
		}
	}
}

func ExampleSampler() {
	s := NewSampler()
	for pid, st := range s.Sample([]int{os.Getpid()}) {
		fmt.Printf("pid %d: %d bytes in %d processes, %.1f%% CPU\n", pid, st.RSS, st.Procs, st.CPU)
	}
}
