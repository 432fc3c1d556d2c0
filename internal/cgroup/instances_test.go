package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Instances reads memory.current of the instance group a pid is in, and
// only of an instance group under its root. The files are laid out as
// /proc and a cgroup2 mount with the memory controller show them (no
// machine here has one).
func TestInstancesMemoryFromFiles(t *testing.T) {
	dir := t.TempDir()
	mnt, proc := filepath.Join(dir, "cgroup"), filepath.Join(dir, "proc")
	write := func(file, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(mnt, "keel.service/keel-a1/memory.current"), "734003200\n")
	write(filepath.Join(mnt, "keel.service/keel-b2/cgroup.procs"), "") // no memory controller
	write(filepath.Join(mnt, "keel.service/daemon/memory.current"), "9000000\n")
	write(filepath.Join(mnt, "other/keel-c3/memory.current"), "1\n")
	write(filepath.Join(proc, "10/cgroup"), "0::/keel.service/keel-a1\n")
	write(filepath.Join(proc, "11/cgroup"), "12:memory:/x\n0::/keel.service/keel-b2\n")
	write(filepath.Join(proc, "12/cgroup"), "0::/keel.service/daemon\n")
	write(filepath.Join(proc, "13/cgroup"), "0::/other/keel-c3\n")
	write(filepath.Join(proc, "14/cgroup"), "4:memory:/keel.service/keel-a1\n") // v1 only
	write(filepath.Join(proc, "15/cgroup"), "0::/keel.service/keel-a1/sub\n")   // the app made a group of its own

	in := &Instances{root: filepath.Join(mnt, "keel.service"), mount: mnt, proc: proc}
	for _, c := range []struct {
		pid  int
		want int64
		ok   bool
	}{
		{10, 734003200, true},
		{11, 0, false}, // falls back to /proc
		{12, 0, false}, // the daemon's leaf is no instance
		{13, 0, false}, // not under the root
		{14, 0, false},
		{15, 0, false},
		{16, 0, false}, // gone
	} {
		if n, ok := in.Memory(c.pid); n != c.want || ok != c.ok {
			t.Errorf("pid %d: Memory = %d, %v; want %d, %v", c.pid, n, ok, c.want, c.ok)
		}
	}
}

// On a real cgroup2 mount: a process born in keel-<id> under the root is
// found there, and Memory reads memory.current where the controller is on
// and says no where it is off (as on the machine keel is built on).
func TestInstancesFindsTheGroup(t *testing.T) {
	parent := writableV2(t)
	root, err := Create(parent, fmt.Sprintf("keel-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Remove() })
	g, err := Create(root.Dir(), "keel-abc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Kill(); g.WaitEmpty(context.Background()); g.Remove() })
	fd, err := g.Open()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	err = cmd.Start()
	fd.Close()
	if err != nil {
		t.Fatalf("starting into the cgroup: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	in, err := NewInstances(root.Dir())
	if err != nil {
		t.Fatal(err)
	}
	got, ok := in.groupOf(cmd.Process.Pid)
	if !ok || got.Dir() != g.Dir() {
		t.Fatalf("the group of %d: %v, %v; want %s", cmd.Process.Pid, got, ok, g.Dir())
	}
	if _, ok := in.groupOf(os.Getpid()); ok {
		t.Fatal("the test process counted as an instance")
	}
	n, ok := in.Memory(cmd.Process.Pid)
	_, statErr := os.Stat(filepath.Join(g.Dir(), "memory.current"))
	if ok != (statErr == nil) || ok && n <= 0 {
		t.Fatalf("Memory = %d, %v; memory.current: %v", n, ok, statErr)
	}
	t.Logf("memory controller on: %v (%d bytes)", ok, n)
}
