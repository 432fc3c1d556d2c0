package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOwnV2Path(t *testing.T) {
	dir := t.TempDir()
	hybrid := filepath.Join(dir, "hybrid")
	os.WriteFile(hybrid, []byte("4:memory:/x\n0::/user.slice/keel.service\n"), 0o600)
	if p, err := ownV2Path(hybrid); err != nil || p != "/user.slice/keel.service" {
		t.Fatalf("ownV2Path = %q, %v", p, err)
	}
	v1 := filepath.Join(dir, "v1")
	os.WriteFile(v1, []byte("4:memory:/x\n1:cpu:/\n"), 0o600)
	if _, err := ownV2Path(v1); err == nil {
		t.Fatal("a v1-only cgroup file gave a v2 path")
	}
}

func TestV2Mount(t *testing.T) {
	f := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(f, []byte("30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"+
		"35 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:14 - cgroup2 cgroup2 rw\n"), 0o600)
	if m, err := v2Mount(f); err != nil || m != "/sys/fs/cgroup/unified" {
		t.Fatalf("v2Mount = %q, %v", m, err)
	}
}

// Probe answers on any machine, and says why when it is no.
func TestProbe(t *testing.T) {
	ok, why := Probe()
	t.Logf("delegated %v: %s", ok, why)
	if !ok && why == "" {
		t.Fatal("no delegated cgroup, and no reason")
	}
}
