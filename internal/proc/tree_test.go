package proc

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"
)

// Children finds this process's children, by the kernel's children files
// and by the scan of every process's parent alike.
func TestChildren(t *testing.T) {
	var cmds []*exec.Cmd
	for i := 0; i < 3; i++ {
		c := exec.Command("/bin/sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	byFiles, byScan := Children(os.Getpid()), childrenByScan(os.Getpid())
	for _, c := range cmds {
		if !slices.Contains(byFiles, c.Process.Pid) || !slices.Contains(byScan, c.Process.Pid) {
			t.Fatalf("child %d: children files %v, scan %v", c.Process.Pid, byFiles, byScan)
		}
	}
	if got := Children(cmds[0].Process.Pid); len(got) != 0 {
		t.Fatalf("sleep has children %v", got)
	}
}

// KillMarked ends the children that carry the mark, with their whole
// trees, and leaves the others and theirs alone.
func TestKillMarked(t *testing.T) {
	start := func(mark string) *exec.Cmd {
		// sh waits on a grandchild, so each tree is two deep.
		c := exec.Command("/bin/sh", "-c", "/bin/sleep 60 & wait")
		c.Env = append(os.Environ(), mark)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	a, b := start("KEEL_TEST_MARK=a"), start("KEEL_TEST_MARK=b")
	grandchild := func(c *exec.Cmd) int {
		t.Helper()
		var kids []int
		poll.Until(t, 10*time.Second, "sh to start its sleep", func() bool {
			kids = Children(c.Process.Pid)
			return len(kids) == 1
		})
		return kids[0]
	}
	ga, gb := grandchild(a), grandchild(b)
	if n := KillMarked(0, "KEEL_TEST_MARK=a", nil); n != 2 {
		t.Fatalf("killed %d, want sh and its sleep", n)
	}
	if err := a.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the marked child: %v, want killed", err)
	}
	waitGone(t, ga)
	for _, pid := range []int{b.Process.Pid, gb} {
		if st, err := readStat(pid); err != nil || st.state == 'Z' {
			t.Fatalf("unmarked process %d was killed", pid)
		}
	}
	if n := KillMarked(0, "KEEL_TEST_MARK=c", nil); n != 0 {
		t.Fatalf("a mark nobody carries killed %d", n)
	}
	// A child named as a leader is never taken for an orphan, whatever
	// its environment holds.
	leader := func(pid int) bool { return pid == b.Process.Pid }
	if n := KillMarked(0, "KEEL_TEST_MARK=b", leader); n != 0 {
		t.Fatalf("killed %d processes of a leader's tree", n)
	}
	if n := KillMarked(0, "KEEL_TEST_MARK=b", nil); n != 2 {
		t.Fatalf("killed %d, want the unnamed child and its sleep", n)
	}
}

// waitGone waits until pid is no longer alive (or is a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	poll.Until(t, 10*time.Second, "process "+strconv.Itoa(pid)+" to end", func() bool {
		st, err := readStat(pid)
		return err != nil || st.state == 'Z' || st.state == 'X'
	})
}
