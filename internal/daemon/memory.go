package daemon

import (
	"github.com/keel-run/keel/internal/cgroup"
	"github.com/keel-run/keel/internal/procstat"
)

// instanceMemory says how much memory an instance's tree uses, by the
// pid of its main process: in cgroup mode its group's memory.current
// (the whole tree, whatever left the process group, and the page cache
// and kernel memory it is charged), else the RSS of the tree found in
// /proc. The zero value is the /proc figure alone.
type instanceMemory struct {
	// group is cgroup.Instances.Memory; nil: no cgroup per instance.
	group func(pid int) (int64, bool)
}

// newInstanceMemory reads the groups under cg, the directory the
// instances' cgroups go in ("" for none).
func newInstanceMemory(cg string) (instanceMemory, error) {
	if cg == "" {
		return instanceMemory{}, nil
	}
	in, err := cgroup.NewInstances(cg)
	if err != nil {
		return instanceMemory{}, err
	}
	return instanceMemory{group: in.Memory}, nil
}

// tree is the memory of pid's instance tree, for max_memory.
func (m instanceMemory) tree(pid int) (int64, error) {
	if m.group != nil {
		if n, ok := m.group(pid); ok {
			return n, nil
		}
	}
	return procstat.TreeRSS(pid)
}

// apply puts the groups' memory.current in place of the /proc figures
// of a sample, for the instances that have it.
func (m instanceMemory) apply(stats map[int]procstat.Stat) {
	if m.group == nil {
		return
	}
	for pid, st := range stats {
		if n, ok := m.group(pid); ok {
			st.RSS = n
			stats[pid] = st
		}
	}
}
