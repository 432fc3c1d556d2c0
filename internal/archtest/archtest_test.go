package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
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
		mod + "internal/client", mod + "internal/daemon", mod + "internal/keeper", mod + "internal/store",
		mod + "internal/web", mod + "internal/metrics"}
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
		"internal/logs":     {"internal/spec", "internal/epoll"},
		"internal/epoll":    nil,
		"internal/proc":     nil,
		"internal/sdnotify": nil,
		"internal/sockets":  nil,
		"internal/nodeipc":  nil,
		"internal/crash":    {"internal/spec", "internal/http1", "internal/oneline"},
		"internal/oneline":  nil,
		"internal/http1":    nil,
		"internal/health":   {"internal/http1"},
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

// keel's resident memory is mostly its binary's pages: net/http's package
// inits alone cost the daemon about 0.5 MB of RSS, and its server code
// another 350 KB per control request. internal/http1 does what keel needs.
func TestKeelLinksNoNetHTTP(t *testing.T) {
	for _, d := range deps(t, "cmd/keel") {
		if d == "net/http" || strings.HasPrefix(d, "net/http/") {
			t.Errorf("cmd/keel links %s: use internal/http1 (see its package doc)", d)
		}
		// k8s.io/api is for internal/kube's tests only: keel writes its
		// manifests from small structs of its own.
		if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") {
			t.Errorf("cmd/keel links %s: Kubernetes modules are test-only", d)
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

// The daemon's resident memory is mostly the binary's own pages, so a
// bigger binary is a bigger daemon. One reflective method lookup
// reachable anywhere (text/template evaluating a field, as a custom cobra
// template does) makes the linker keep every exported method of every
// type that reaches an interface: a third more binary.
func TestLinkerDropsUnusedMethods(t *testing.T) {
	if testing.Short() {
		t.Skip("links keel")
	}
	out := filepath.Join(t.TempDir(), "keel")
	cmd := exec.Command("go", "build", "-o", out, "-ldflags=-dumpdep", mod+"cmd/keel")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	dump, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build -ldflags=-dumpdep: %v\n%.2000s", err, dump)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(dump), "\n") {
		from, _, ok := strings.Cut(line, " -> ")
		if ok && strings.HasSuffix(from, "<ReflectMethod>") && !seen[from] {
			seen[from] = true
			t.Errorf("%s: a reflective method call in keel's binary stops dead-method elimination", strings.TrimSuffix(from, " <ReflectMethod>"))
		}
	}
}
