package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/keel-run/keel/"

// deps lists every package pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func standard(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}

func TestCoreKnowsNothingOfTransportOrCLI(t *testing.T) {
	banned := []string{"net/http", mod + "internal/api", mod + "internal/cli", mod + "internal/control",
		mod + "internal/client", mod + "internal/daemon", mod + "internal/keeper", mod + "internal/store"}
	for _, d := range deps(t, "internal/supervisor") {
		for _, b := range banned {
			if d == b {
				t.Errorf("internal/supervisor imports %s", d)
			}
		}
	}
}

func TestLeavesStayLeaves(t *testing.T) {
	leaves := map[string][]string{
		"internal/spec":     nil,
		"internal/logs":     {"internal/spec"},
		"internal/proc":     nil,
		"internal/sdnotify": nil,
		"internal/sockets":  nil,
		"internal/nodeipc":  nil,
		"internal/crash":    {"internal/spec"},
		"internal/procstat": nil,
		"internal/reaper":   nil,
	}
	for leaf, allowed := range leaves {
		ok := map[string]bool{mod + leaf: true}
		for _, a := range allowed {
			ok[mod+a] = true
		}
		for _, d := range deps(t, leaf) {
			if standard(d) || ok[d] || strings.HasPrefix(d, "golang.org/x/sys/") {
				continue
			}
			t.Errorf("%s imports %s", leaf, d)
		}
	}
}

func TestLibraryNeedsOnlyStdAndX(t *testing.T) {
	for _, pkg := range []string{"guard", "serve"} {
		for _, d := range deps(t, pkg) {
			if standard(d) || strings.HasPrefix(d, "golang.org/x/") || strings.HasPrefix(d, mod+"guard") || strings.HasPrefix(d, mod+"serve") {
				continue
			}
			t.Errorf("%s imports %s", pkg, d)
		}
	}
}

func TestNoGrabBagPackages(t *testing.T) {
	out, err := exec.Command("go", "list", mod+"...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		base := p[strings.LastIndex(p, "/")+1:]
		switch base {
		case "util", "utils", "common", "helpers", "misc":
			t.Errorf("package %s: name it after what it holds", p)
		}
	}
}
