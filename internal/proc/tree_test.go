package proc

import (
	"os"
	"os/exec"
	"slices"
	"testing"
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
