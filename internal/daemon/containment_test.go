package daemon

import (
	"strings"
	"testing"

	"github.com/keel-run/keel/internal/cgroup"
)

// describe's containment line names the mode in force, and why there is
// no cgroup per instance when there is none.
func TestContainment(t *testing.T) {
	plain := t.TempDir()
	if cg, why := instanceCgroups(plain); cg != "" || !strings.Contains(why, plain+" is not in a cgroup v2 file system") {
		t.Fatalf("a given directory that is no cgroup: %q, %q", cg, why)
	}
	if own, err := cgroup.Own(); err == nil && cgroup.Usable(own) == nil {
		if cg, why := instanceCgroups(own); cg != own || why != "" {
			t.Fatalf("a given cgroup v2 directory: %q, %q", cg, why)
		}
	}
	if got := containment("/sys/fs/cgroup/keel", ""); !strings.HasPrefix(got, "cgroup v2 per instance under /sys/fs/cgroup/keel") {
		t.Fatalf("with a cgroup: %q", got)
	}
	if ok, why := cgroup.Probe(); !ok {
		cg, why2 := instanceCgroups("")
		if cg != "" || why2 != why {
			t.Fatalf("no delegated subtree (%s): %q, %q", why, cg, why2)
		}
		if got := containment(cg, why2); !strings.Contains(got, "child subreaper") || !strings.Contains(got, why) {
			t.Fatalf("without a cgroup: %q", got)
		}
	}
}
