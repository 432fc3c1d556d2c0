package daemon

import (
	"strings"
	"testing"

	"github.com/keel-run/keel/internal/cgroup"
)

// describe's containment line names the mode in force, and why there is
// no cgroup per instance when there is none.
func TestContainment(t *testing.T) {
	if cg, why := instanceCgroups("/sys/fs/cgroup/keel"); cg != "/sys/fs/cgroup/keel" || why != "" {
		t.Fatalf("a given directory: %q, %q", cg, why)
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
