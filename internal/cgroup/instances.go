package cgroup

import (
	"path/filepath"
	"strconv"
	"strings"
)

// Instances finds an instance's group from the pid of a process in it,
// so the daemon can read the memory of a whole instance tree knowing only
// its pid, as `ls` and max_memory do — for instances it started and for
// those it adopted alike. The groups are the keepers' keel-<id> directly
// under one directory.
type Instances struct {
	root  string // the directory the instances' groups are in
	mount string // where cgroup2 is mounted
	proc  string // "/proc"
}

// NewInstances reads the groups under root, a cgroup v2 directory (the
// daemon's Options.Cgroup or its delegated subtree).
func NewInstances(root string) (*Instances, error) {
	mnt, err := v2Mount("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return &Instances{root: filepath.Clean(root), mount: mnt, proc: "/proc"}, nil
}

// Memory is memory.current of the instance group pid is in: every byte
// the tree charges, its children's that left the process group or
// session included, and the page cache and kernel memory it uses, which
// an RSS sum misses. ok is false when pid is in no instance group under
// the root (gone, or started before cgroup mode) or the group has no
// memory controller; the caller then counts the tree from /proc.
func (in *Instances) Memory(pid int) (bytes int64, ok bool) {
	g, ok := in.groupOf(pid)
	if !ok {
		return 0, false
	}
	return g.Memory()
}

// groupOf is the instance group pid is in, from /proc/<pid>/cgroup.
func (in *Instances) groupOf(pid int) (*Group, bool) {
	rel, err := ownV2Path(filepath.Join(in.proc, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return nil, false
	}
	dir := filepath.Join(in.mount, rel)
	if filepath.Dir(dir) != in.root || !strings.HasPrefix(filepath.Base(dir), "keel-") {
		return nil, false
	}
	return &Group{dir: dir}, true
}
