package keeper

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/cgroup"
	"github.com/keel-run/keel/internal/cgroup/cgrouptest"
	"github.com/keel-run/keel/internal/poll"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/spec"
)

// With SpawnerConfig.Cgroup, the app and everything it starts live in a
// cgroup of their own, which is gone once the app has exited.
func TestAppInACgroupOfItsOwn(t *testing.T) {
	parent := cgrouptest.Scratch(t, "keeper-test")
	if _, err := os.Stat(filepath.Join(parent.Dir(), "cgroup.kill")); err != nil {
		t.Skipf("no cgroup.kill (Linux before 5.14?): %v", err)
	}

	h := newHarness(t)
	s := h.spawnerWith(SpawnerConfig{Cgroup: parent.Dir(), NoStandby: true})
	a := &spec.App{Name: "t-cgroup", Script: "/bin/sh", Interpreter: "none",
		Args: []string{"-c", "setsid sleep 60 & exec sleep 60"}}
	a.Normalize()
	p := h.spawn(s, a, 0)
	dir := filepath.Join(parent.Dir(), "keel-"+p.st.ID)

	var pids []int
	poll.Until(t, eventTimeout, dir+" to hold the app and its setsid child", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatalf("the app's cgroup: %v", err)
		}
		pids = pids[:0]
		for f := range strings.FieldsSeq(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return len(pids) >= 2
	})
	if !slices.Contains(pids, p.st.Pid) {
		t.Fatalf("%s holds %v, not the app %d", dir, pids, p.st.Pid)
	}
	var child proc.Identity
	var err error
	for _, pid := range pids {
		if pid != p.st.Pid {
			if child, err = proc.Identify(pid); err != nil {
				t.Fatal(err)
			}
		}
	}

	finish(t, p)
	if child.Running() {
		t.Fatalf("the setsid child %d outlived the app", child.Pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the app's cgroup is left behind: %v", err)
	}
}

// An instance's exit is put down to the OOM killer when its cgroup's
// memory.events counted an oom_kill, and only then. (No machine here has
// the memory controller to make the kernel do it; the files are what the
// kernel writes.)
func TestOOMKillFromMemoryEvents(t *testing.T) {
	g, err := cgroup.Create(t.TempDir(), "keel-test")
	if err != nil {
		t.Fatal(err)
	}
	if oomKilled(g) {
		t.Fatal("no memory.events (no memory controller) counted as an OOM kill")
	}
	events := filepath.Join(g.Dir(), "memory.events")
	for _, c := range []struct {
		file string
		want bool
	}{
		{"low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n", false},
		{"low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n", true},
	} {
		if err := os.WriteFile(events, []byte(c.file), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := oomKilled(g); got != c.want {
			t.Fatalf("memory.events %q: OOM-killed %v, want %v", c.file, got, c.want)
		}
	}
	ex := spec.ExitSignal("SIGKILL", time.Now())
	ex.Cause = spec.CauseOOMKilled
	if !ex.Crashed() || ex.String() != "signal SIGKILL, killed by the kernel OOM killer" {
		t.Fatalf("an OOM-killed exit: crashed %v, %q", ex.Crashed(), ex.String())
	}
}
