// Package nodetest is for tests that run real Node apps: it skips a test
// when node is missing and installs Express from npm into a cache that
// test runs share.
package nodetest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ExpressVersion is the Express the tests install.
const ExpressVersion = "5.3.0"

// Require skips t, saying why, when node is not in PATH.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed (not in PATH): skipping a test of Node apps")
	}
}

// InstallExpress installs Express into a cache shared by test runs
// (os.UserCacheDir()/keel-test/express-<version>) and returns its
// node_modules. Concurrent installs are harmless: each goes into a
// directory of its own, renamed into place. It skips t without node or npm.
func InstallExpress(t testing.TB) string {
	t.Helper()
	Require(t)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "keel-test")
	final := filepath.Join(base, "express-"+ExpressVersion)
	modules := filepath.Join(final, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "express", "package.json")); err == nil {
		return modules
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: cannot install Express for an Express test")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(base, ".express-*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", tmp, "--no-audit", "--no-fund",
		"--ignore-scripts", "--no-package-lock", "express@"+ExpressVersion)
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install express@%s: %v\n%s", ExpressVersion, err, out)
	}
	if err := os.Rename(tmp, final); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Stat(filepath.Join(modules, "express", "package.json")); serr != nil {
			t.Fatalf("installing express: %v", err)
		}
	}
	return modules
}
