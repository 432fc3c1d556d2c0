package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot is the directory of keel's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run this from inside keel's module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// GoBuild builds pkg into out, statically, as keel ships.
func GoBuild(ctx context.Context, root, out, pkg string) error {
	c := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	c.Dir = root
	// The static binary keel ships as: no dynamic loader at every start.
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// PackageVersion reads the version of the npm package a node_modules/.bin
// link points into.
func PackageVersion(bin string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(bin), "..", "pm2", "package.json"))
	var pkg struct{ Version string }
	if err != nil || json.Unmarshal(b, &pkg) != nil {
		return "?"
	}
	return pkg.Version
}

// Command runs a command and returns its output, trimmed, or "?".
func Command(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
