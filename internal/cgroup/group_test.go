package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writableV2 is this process's cgroup v2 directory when the test may
// create groups in it (root on a host with a writable unified hierarchy,
// or a delegated subtree); the test is skipped otherwise.
func writableV2(t *testing.T) string {
	t.Helper()
	dir, err := Own()
	if err != nil {
		t.Skip(err)
	}
	if unix.Access(dir, unix.W_OK) != nil {
		t.Skipf("cgroup v2 at %s is not writable", dir)
	}
	return dir
}

func procs(t *testing.T, g *Group) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.Dir(), "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	return pids
}

// A tree born in the group — with a child that called setsid, a
// double-forked grandchild and a leader that ignores SIGTERM — is ended
// whole by Kill, and the group can then be removed.
func TestGroupKillsTheWholeTree(t *testing.T) {
	parent := writableV2(t)
	g, err := Create(parent, fmt.Sprintf("keel-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Kill(); g.WaitEmpty(context.Background()); g.Remove() })
	if _, err := os.Stat(filepath.Join(g.Dir(), "cgroup.kill")); err != nil {
		t.Skipf("no cgroup.kill (Linux before 5.14?): %v", err)
	}
	fd, err := g.Open()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `trap "" TERM
setsid sleep 60 &
sh -c 'setsid sh -c "sleep 60 &" &' &
sleep 60`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	err = cmd.Start()
	fd.Close()
	if err != nil {
		t.Fatalf("starting into the cgroup: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	// sh, setsid's sleep, the double-forked sleep, sh's own sleep.
	deadline := time.Now().Add(10 * time.Second)
	var pids []int
	for {
		pids = procs(t, g)
		if len(pids) >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group holds %v, want sh and 3 sleeps", pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if pop, err := g.Populated(); err != nil || !pop {
		t.Fatalf("Populated = %v, %v with %v in it", pop, err, pids)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader outlived cgroup.kill")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		// Gone, or a zombie waiting for init: either way no longer running.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && b[i+2] != 'Z' {
				t.Errorf("pid %d of the group still runs: %s", pid, b)
			}
		}
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Dir()); !os.IsNotExist(err) {
		t.Fatalf("the group's directory is still there: %v", err)
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("removing a removed group: %v", err)
	}
}

// Memory and OOMKills say when the memory controller is off rather than
// give a wrong figure.
func TestGroupMemoryWithoutController(t *testing.T) {
	parent := writableV2(t)
	g, err := Create(parent, fmt.Sprintf("keel-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	_, memOK := g.Memory()
	_, oomOK := g.OOMKills()
	_, statErr := os.Stat(filepath.Join(g.Dir(), "memory.current"))
	if memOK != (statErr == nil) || oomOK != (statErr == nil) {
		t.Fatalf("Memory ok %v, OOMKills ok %v, memory.current: %v", memOK, oomOK, statErr)
	}
}

func TestCreateRejectsBadNames(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b"} {
		if _, err := Create(t.TempDir(), n); err == nil {
			t.Errorf("Create(%q) succeeded", n)
		}
	}
}

func TestReadKey(t *testing.T) {
	f := filepath.Join(t.TempDir(), "memory.events")
	os.WriteFile(f, []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n"), 0o600)
	if n, err := readKey(f, "oom_kill"); err != nil || n != 2 {
		t.Fatalf("oom_kill = %d, %v", n, err)
	}
	if _, err := readKey(f, "populated"); err == nil {
		t.Fatal("a missing key read as found")
	}
}
