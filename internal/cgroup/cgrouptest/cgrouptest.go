// Package cgrouptest gives tests a cgroup v2 group of their own to run
// processes in, where the machine lets them make one.
package cgrouptest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/cgroup"
)

// Scratch makes a group named keel-<name>-<pid>-<time> under this
// process's own cgroup, and skips the test where that is not a writable
// cgroup v2 directory. When the test ends, every process in the group and
// in the groups made under it is killed and the groups are removed.
func Scratch(t *testing.T, name string) *cgroup.Group {
	t.Helper()
	own, err := cgroup.Own()
	if err != nil {
		t.Skip(err)
	}
	if err := cgroup.Usable(own); err != nil {
		t.Skip(err)
	}
	g, err := cgroup.Create(own, fmt.Sprintf("keel-%s-%d-%d", name, os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(g.Dir())
		for _, en := range entries {
			if en.IsDir() {
				if sub, err := cgroup.Create(g.Dir(), en.Name()); err == nil {
					empty(sub)
					sub.Remove()
				}
			}
		}
		empty(g)
		if err := g.Remove(); err != nil {
			t.Error(err)
		}
	})
	return g
}

// empty kills what is in g and waits, a while, until it is gone.
func empty(g *cgroup.Group) {
	g.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.WaitEmpty(ctx)
}
