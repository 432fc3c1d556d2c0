package trigger

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const helperEnv = "KEEL_TRIGGER_HELPER"

// TestMain doubles the test binary as the helper processes the tests
// watch; see helper.
func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helper(h))
	}
	goleak.VerifyTestMain(m)
}

// helper runs one helper process. "grow" prints "ready", and on the line
// "grow" on stdin allocates and touches 64 MiB and prints "grown". It exits
// when stdin closes.
func helper(name string) int {
	if name != "grow" {
		fmt.Fprintln(os.Stderr, "unknown helper", name)
		return 2
	}
	fmt.Println("ready")
	var mem []byte
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "grow" {
			mem = make([]byte, 64<<20)
			for i := 0; i < len(mem); i += 4096 {
				mem[i] = 1
			}
			fmt.Println("grown")
		}
	}
	return len(mem) & 1
}

// child is a running helper process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{} // closed when Wait returned
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// say writes a line to the child and waits for the answer want.
func (c *child) say(t *testing.T, line, want string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
	c.expect(t, want)
}

func (c *child) expect(t testing.TB, want string) {
	t.Helper()
	select {
	case got, ok := <-c.lines:
		if !ok || got != want {
			t.Fatalf("helper %d said %q (open %v), want %q", c.pid(), got, ok, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("helper %d: no %q within 20s", c.pid(), want)
	}
}

// startHelper starts a helper and waits until it is ready. Cleanup closes
// its stdin and waits for it, killing it if it lingers.
func startHelper(t *testing.T, name string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
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
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-c.done
			t.Errorf("helper %d did not exit on EOF; killed", c.pid())
		}
	})
	c.expect(t, "ready")
	return c
}

// recorder collects Restart requests.
type recorder struct{ c chan Restart }

func newRecorder() *recorder { return &recorder{c: make(chan Restart, 64)} }

func (r *recorder) restart(x Restart) { r.c <- x }

// next waits for the next request.
func (r *recorder) next(t *testing.T) Restart {
	t.Helper()
	select {
	case x := <-r.c:
		return x
	case <-time.After(10 * time.Second):
		t.Fatal("no restart requested within 10s")
		return Restart{}
	}
}

// none fails if a request has arrived.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case x := <-r.c:
		t.Fatalf("unexpected restart %+v", x)
	default:
	}
}
