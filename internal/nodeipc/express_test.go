package nodeipc

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// expressVersion is the Express the tests install from npm.
const expressVersion = "5.3.0"

// installExpress installs Express into a cache directory shared by test
// runs (os.UserCacheDir()/keel-test/express-<version>) and returns its
// node_modules. A concurrent run installing too is harmless: each installs
// into a directory of its own and renames it into place.
func installExpress(t *testing.T) string {
	t.Helper()
	requireNode(t)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "keel-test")
	final := filepath.Join(base, "express-"+expressVersion)
	modules := filepath.Join(final, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "express", "package.json")); err == nil {
		return modules
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: cannot install Express for the Express test")
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
		"--ignore-scripts", "--no-package-lock", "express@"+expressVersion)
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install express@%s: %v\n%s", expressVersion, err, out)
	}
	if err := os.Rename(tmp, final); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Stat(filepath.Join(modules, "express", "package.json")); serr != nil {
			t.Fatalf("installing express: %v", err)
		}
	}
	return modules
}

func TestNodeExpressAppListen(t *testing.T) {
	modules := installExpress(t)
	l := listenTCP(t)
	app := startNode(t, nodeOpts{
		// Unmodified: what an Express user writes.
		script: `
const express = require('express');
const app = express();
app.get('/', (req, res) => res.send('express ' + process.pid));
app.listen(3000, () => console.log('Example app listening on port 3000'));
`,
		env: []string{"NODE_PATH=" + modules},
		// Port 3000 is answered with keel's socket: node never binds it.
		listen: serveOn(3000, l, nil),
	})
	ev := app.event(t, EventListening)
	if !ev.Listening.Keel {
		t.Fatalf("listening %+v, want keel's socket", ev.Listening)
	}
	app.stdout.waitFor(t, "Example app listening on port 3000")
	code, body, _ := httpGet(t, l.LocalAddr().String(), "/")
	if code != 200 || body != "express "+strconv.Itoa(app.cmd.Process.Pid) {
		t.Fatalf("GET = %d %q", code, body)
	}
	app.signal(t, syscall.SIGTERM)
	if code, sig := app.wait(t); code != 0 || sig != 0 {
		t.Fatalf("exit %d %v after SIGTERM, want 0", code, sig)
	}
}
