package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/cgroup/cgrouptest"
	"github.com/keel-run/keel/internal/poll"
)

// With KEEL_CGROUP naming a writable cgroup v2 directory, every instance
// runs in a group of its own under it, keel-<id>: describe says so, the
// app and what it started (here a child in a session of its own) are in
// it, ls shows the tree's memory (memory.current, or the RSS from /proc
// where the group has no memory controller, as on the machine keel is
// built on), and a restart or stop ends the whole group and removes it.
func TestCgroupPerInstance(t *testing.T) {
	// Made before newEnv, so its clean-up runs after the daemon is gone.
	parent := cgrouptest.Scratch(t, "e2e")
	e := newEnv(t)
	dir := t.TempDir()
	pids := func() []int { return lingerPids(dir) }
	// groups lists the instance groups under parent and their processes.
	groups := func() map[string][]int {
		out := map[string][]int{}
		entries, err := os.ReadDir(parent.Dir())
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if !en.IsDir() {
				continue
			}
			b, _ := os.ReadFile(filepath.Join(parent.Dir(), en.Name(), "cgroup.procs"))
			var l []int
			for _, f := range strings.Fields(string(b)) {
				n, _ := strconv.Atoi(f)
				l = append(l, n)
			}
			out[en.Name()] = l
		}
		return out
	}
	// inOneGroup waits for the n-th descendant and checks that it and the
	// app are in one keel-<id> group, the only one; it returns the group.
	inOneGroup := func(n int) (string, api.Instance, int) {
		t.Helper()
		in := e.waitFor("online", allStatus("cg", 1, "online"))[0]
		poll.Until(t, 20*time.Second, fmt.Sprintf("descendant %d to start", n), func() bool { return len(pids()) >= n })
		child := pids()[n-1]
		var g map[string][]int
		poll.Until(t, 10*time.Second, "one group with the app and its child", func() bool {
			g = groups()
			return len(g) == 1
		})
		for name, l := range g {
			if !strings.HasPrefix(name, "keel-") || !slices.Contains(l, in.Pid) || !slices.Contains(l, child) {
				t.Fatalf("groups under %s: %v; want keel-<id> holding the app %d and its child %d", parent.Dir(), g, in.Pid, child)
			}
			return name, in, child
		}
		panic("unreachable")
	}
	empty := func(verb, group string, child int) {
		t.Helper()
		if !poll.Within(10*time.Second, func() bool { return !alive(child) }) {
			t.Fatalf("after %s, the app's child %d still runs", verb, child)
		}
		poll.Until(t, 10*time.Second, "the instance's group removed after "+verb, func() bool {
			_, err := os.Stat(filepath.Join(parent.Dir(), group))
			return os.IsNotExist(err)
		})
	}

	r := e.keelWith([]string{"KEEL_CGROUP=" + parent.Dir()}, "start", os.Args[0], "--name", "cg",
		"--env", "KEEL_E2E_APP=escape", "--env", "ESCAPE=setsid", "--env", "ESCAPE_DIR="+dir, "--kill-timeout", "300ms")
	if r.code != 0 {
		t.Fatalf("keel start: exit %d: %s", r.code, r.err)
	}
	group, _, child := inOneGroup(1)

	var det []api.AppDetail
	if err := jsonUnmarshal(e.ok("describe", "cg", "--json"), &det); err != nil || len(det) != 1 ||
		!strings.HasPrefix(det[0].Containment, "cgroup v2 per instance under "+parent.Dir()) {
		t.Fatalf("describe: %+v, %v", det, err)
	}
	hasMemory := false
	if _, err := os.Stat(filepath.Join(parent.Dir(), group, "memory.current")); err == nil {
		hasMemory = true
	}
	l := e.waitFor("the instance's memory", func(l []api.Instance) bool { return len(l) == 1 && l[0].MemoryBytes > 0 })
	t.Logf("memory controller: %v; ls shows %d bytes", hasMemory, l[0].MemoryBytes)

	e.ok("restart", "cg")
	empty("restart", group, child)
	group, _, child = inOneGroup(2)

	e.ok("stop", "cg")
	empty("stop", group, child)
	if g := groups(); len(g) != 0 {
		t.Fatalf("after stop, groups left under %s: %v", parent.Dir(), g)
	}
}
