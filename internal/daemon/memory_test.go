package daemon

import (
	"os"
	"testing"

	"github.com/keel-run/keel/internal/procstat"
)

// In cgroup mode an instance's memory is its group's memory.current;
// where a group has none (no memory controller, or an instance started
// before cgroup mode) it is the tree's RSS from /proc, as without cgroups.
func TestInstanceMemory(t *testing.T) {
	self := os.Getpid()
	rss, err := procstat.TreeRSS(self)
	if err != nil || rss <= 0 {
		t.Fatalf("TreeRSS of the test: %d, %v", rss, err)
	}
	const inGroup = 1 << 40 // no RSS of this test's is this big
	groups := map[int]int64{self: inGroup}
	m := instanceMemory{group: func(pid int) (int64, bool) { n, ok := groups[pid]; return n, ok }}

	if n, err := m.tree(self); err != nil || n != inGroup {
		t.Fatalf("max_memory's figure with a group: %d, %v; want memory.current %d", n, err, int64(inGroup))
	}
	stats := map[int]procstat.Stat{self: {RSS: rss, Procs: 1}, self + 1: {RSS: 4096, Procs: 1}}
	m.apply(stats)
	if stats[self].RSS != inGroup || stats[self].Procs != 1 || stats[self+1].RSS != 4096 {
		t.Fatalf("ls's figures: %+v; want memory.current for %d only", stats, self)
	}

	delete(groups, self)
	if n, err := m.tree(self); err != nil || n <= 0 || n >= inGroup {
		t.Fatalf("max_memory's figure without memory.current: %d, %v; want the RSS from /proc", n, err)
	}
	none, err := newInstanceMemory("")
	if err != nil || none.group != nil {
		t.Fatalf("no cgroups: %+v, %v", none, err)
	}
	if n, err := none.tree(self); err != nil || n <= 0 {
		t.Fatalf("without cgroups: %d, %v", n, err)
	}
	if _, err := none.tree(1 << 30); err == nil {
		t.Fatal("the memory of no process")
	}
}
