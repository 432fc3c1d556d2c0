package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Group is one cgroup v2 directory that holds one instance's process
// tree: its processes start in it (StartIn's fd, CLONE_INTO_CGROUP, so
// not even the first instruction runs elsewhere), cgroup.kill ends all of
// them at once whatever they did to leave the process group or session,
// and memory.current / memory.events describe the whole tree where the
// memory controller is on.
type Group struct {
	dir string
}

// Create makes the cgroup name under parent (a cgroup v2 directory this
// process may write to). An existing empty one of the same name is
// reused: a keeper that died left it behind.
func Create(parent, name string) (*Group, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return nil, fmt.Errorf("creating a cgroup under %s: bad name %q", parent, name)
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	return &Group{dir: dir}, nil
}

// Dir is the group's directory.
func (g *Group) Dir() string { return g.dir }

// Open opens the directory for syscall.SysProcAttr.CgroupFD (with
// UseCgroupFD): the child is born in the group. The caller closes it after
// the start.
func (g *Group) Open() (*os.File, error) {
	f, err := os.Open(g.dir)
	if err != nil {
		return nil, fmt.Errorf("opening cgroup %s: %w", g.dir, err)
	}
	return f, nil
}

// Kill SIGKILLs every process in the group (cgroup.kill, Linux 5.14).
func (g *Group) Kill() error {
	if err := os.WriteFile(filepath.Join(g.dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("killing cgroup %s: %w", g.dir, err)
	}
	return nil
}

// Populated tells whether any process is left in the group.
func (g *Group) Populated() (bool, error) {
	v, err := readKey(filepath.Join(g.dir, "cgroup.events"), "populated")
	if err != nil {
		return false, err
	}
	return v != 0, nil
}

// WaitEmpty waits until the group holds no process (after Kill: the
// kernel has finished the SIGKILLs and the zombies were reaped), or ctx
// is done. It polls: it runs once per instance exit, never while idle.
func (g *Group) WaitEmpty(ctx context.Context) error {
	wait := time.Millisecond
	for {
		pop, err := g.Populated()
		if err != nil {
			return err
		}
		if !pop {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for cgroup %s to empty: %w", g.dir, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Memory is memory.current, the bytes the whole tree uses; ok is false
// where the memory controller is not on for the group.
func (g *Group) Memory() (bytes int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(g.dir, "memory.current"))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

// OOMKills is memory.events' oom_kill: how many of the group's processes
// the kernel's OOM killer ended. ok is false without the memory
// controller.
func (g *Group) OOMKills() (n int64, ok bool) {
	v, err := readKey(filepath.Join(g.dir, "memory.events"), "oom_kill")
	return v, err == nil
}

// Remove deletes the group's directory, which must be empty of
// processes (Kill, then WaitEmpty). A group already gone is no error.
func (g *Group) Remove() error {
	if err := os.Remove(g.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing cgroup %s: %w", g.dir, err)
	}
	return nil
}

// readKey reads "key value" from a flat-keyed cgroup file.
func readKey(file, key string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("reading %s: %s: %w", file, key, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading %s: %w", file, err)
	}
	return 0, fmt.Errorf("reading %s: no %s", file, key)
}
