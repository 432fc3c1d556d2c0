package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/bench/load"
	"github.com/keel-run/keel/internal/poll"
)

// releaseApp is an unmodified Express server that answers with its
// GREETING and the release its code comes from.
const releaseApp = `const express = require('express');
const app = express();
app.get('/', (req, res) => {
  res.set('X-Keel-Instance', process.env.NODE_APP_INSTANCE);
  res.send(process.env.GREETING + ' %s ' + process.pid + '\n');
});
app.listen(process.env.PORT);
`

// deployDir lays out releases/<release>/server.js and points the current
// link at it, replacing the link atomically as a deploy script does.
func deployRelease(t *testing.T, dir, release, src string) {
	t.Helper()
	rel := filepath.Join(dir, "releases", release)
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, "server.js"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "current.new")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", release), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
}

func writeDeployConfig(t *testing.T, dir string, port int, greeting, nodePath string) string {
	t.Helper()
	cfg := filepath.Join(dir, "keel.yaml")
	src := fmt.Sprintf(`apps:
  - name: web
    cwd: current
    script: server.js
    instances: 2
    listen: 127.0.0.1:%d
    ready_timeout: 10s
    env:
      PORT: "%d"
      GREETING: %s
      NODE_PATH: %s
`, port, port, greeting, nodePath)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// underLoad runs f while 32 keep-alive connections send requests to url,
// for at least 3 s, and returns what the load client counted.
func underLoad(t *testing.T, url string, f func()) *load.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		r   *load.Result
		err error
	}
	done := make(chan outcome, 1)
	start := time.Now()
	go func() {
		r, err := load.Run(ctx, load.Config{URL: url, Conns: 32, Duration: 2 * time.Minute})
		done <- outcome{r, err}
	}()
	f()
	window := time.NewTimer(max(3*time.Second-time.Since(start), 250*time.Millisecond))
	select {
	case <-window.C:
	case o := <-done:
		t.Fatalf("the load ended early: %+v %v", o.r, o.err)
	}
	cancel()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.r.Failures() != 0 || o.r.OK == 0 {
		t.Fatalf("under load: %d ok, failed %v %v", o.r.OK, o.r.Failed, o.r.Errors)
	}
	return o.r
}

// answers asks until every instance answered once, on new connections,
// and returns the bodies without their pids.
func answers(t *testing.T, url string) map[string]bool {
	t.Helper()
	seen, bodies := map[string]bool{}, map[string]bool{}
	for i := 0; i < 1000 && len(seen) < 2; i++ {
		inst, body := fetch(t, url)
		seen[inst] = true
		f := strings.Fields(body)
		bodies[strings.Join(f[:len(f)-1], " ")] = true
	}
	if len(seen) != 2 {
		t.Fatalf("instances seen: %v", seen)
	}
	return bodies
}

// TestDeployFromConfigFile deploys an unmodified Express app the pm2 way:
// edit the file, or switch the release link, then `keel reload FILE` — with
// 32 keep-alive connections and not one failed request.
func TestDeployFromConfigFile(t *testing.T) {
	requireNode(t)
	nodePath := installExpress(t)
	e := newEnv(t)
	dir := t.TempDir()
	port := freePort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	deployRelease(t, dir, "1", fmt.Sprintf(releaseApp, "r1"))
	cfg := writeDeployConfig(t, dir, port, "hello", nodePath)

	if out := e.ok("start", cfg); !strings.Contains(out, "web: started (2 instances)") {
		t.Fatalf("first start: %q", out)
	}
	before := pidsOf(e.waitFor("2 online", allStatus("web", 2, "online")), "web")
	// Applying the same file again changes nothing, and says so.
	if out := e.ok("start", cfg); strings.TrimSpace(out) != "web: unchanged" {
		t.Fatalf("second start: %q", out)
	}
	if r := e.keel("diff", cfg); r.code != 0 || strings.TrimSpace(r.out) != "web: unchanged" {
		t.Fatalf("diff of the same file: exit %d %q %q", r.code, r.out, r.err)
	}
	if after := pidsOf(e.ls(), "web"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("pids %v after an unchanged apply, were %v", after, before)
	}

	// A new env value: diff names the key, never the value; reload applies it.
	writeDeployConfig(t, dir, port, "bonjour-secret", nodePath)
	r := e.keel("diff", cfg)
	if r.code != 1 || !strings.Contains(r.out, "env GREETING changed") || strings.Contains(r.out+r.err, "bonjour") {
		t.Fatalf("diff after an env change: exit %d %q %q", r.code, r.out, r.err)
	}
	res := underLoad(t, url, func() {
		if out := e.ok("reload", cfg); strings.TrimSpace(out) != "web: reloaded (env GREETING changed; 2 instances)" {
			t.Errorf("reload: %q", out)
		}
	})
	t.Logf("env reload: %d requests, 0 failed, %.0f req/s", res.Requests, res.RPS)
	if got := answers(t, url); len(got) != 1 || !got["bonjour-secret r1"] {
		t.Fatalf("answers after the env reload: %v", got)
	}

	// A new release behind the same link: the file is unchanged, the code
	// is not, and every new instance runs the new code.
	deployRelease(t, dir, "2", fmt.Sprintf(releaseApp, "r2"))
	res = underLoad(t, url, func() {
		out := e.ok("reload", cfg)
		if !strings.Contains(out, "web: reloaded (release changed; 2 instances)") {
			t.Errorf("reload after the link switch: %q", out)
		}
	})
	t.Logf("release reload: %d requests, 0 failed, %.0f req/s", res.Requests, res.RPS)
	if got := answers(t, url); len(got) != 1 || !got["bonjour-secret r2"] {
		t.Fatalf("answers after the release switch: %v", got)
	}
	if out := e.ok("reload", cfg); strings.TrimSpace(out) != "web: unchanged" {
		t.Fatalf("reload once more: %q", out)
	}
}

// TestDeployThatCrashesRollsBack: a release that dies at start is not
// rolled out: the old instances serve throughout, the command exits 1 with
// the reason and the app's last words, and the definition stays the old.
func TestDeployThatCrashesRollsBack(t *testing.T) {
	requireNode(t)
	nodePath := installExpress(t)
	e := newEnv(t)
	dir := t.TempDir()
	port := freePort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	deployRelease(t, dir, "1", fmt.Sprintf(releaseApp, "r1"))
	cfg := writeDeployConfig(t, dir, port, "hello", nodePath)
	e.ok("start", cfg)
	e.waitFor("2 online", allStatus("web", 2, "online"))
	oldSpec := e.describe("web").Spec

	bad := "console.log('release 2 booting');\nthrow new Error('cannot reach the database');\n"
	if err := os.WriteFile(filepath.Join(dir, "broken.js"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, []byte(strings.Replace(mustRead(t, cfg), "cwd: current\n    script: server.js", "script: broken.js", 1)), 0o644)
	var r result
	underLoad(t, url, func() { r = e.keel("reload", cfg) })
	if r.code != 1 || !strings.Contains(r.out, "web: rolled back") || !strings.Contains(r.out, "cannot reach the database") ||
		!strings.Contains(r.err, "before it was ready") {
		t.Fatalf("reload of a crashing release: exit %d\nstdout %s\nstderr %s", r.code, r.out, r.err)
	}
	if got := e.describe("web").Spec; got.Script != oldSpec.Script || got.Cwd != oldSpec.Cwd {
		t.Fatalf("describe after the failed deploy: script %q cwd %q, want %q %q", got.Script, got.Cwd, oldSpec.Script, oldSpec.Cwd)
	}
	if got := answers(t, url); len(got) != 1 || !got["hello r1"] {
		t.Fatalf("answers after the failed deploy: %v", got)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestEnvBlocksWithEnvFlag: --env production applies env_production, in a
// keel.yaml and in pm2's ecosystem.config.js alike.
func TestEnvBlocksWithEnvFlag(t *testing.T) {
	requireNode(t)
	e := newEnv(t)
	dir := t.TempDir()
	yaml := filepath.Join(dir, "keel.yaml")
	os.WriteFile(yaml, []byte("apps:\n  - name: a\n    script: /bin/sleep\n    args: [600]\n    env: {STAGE: dev, KEEP: yes}\n    env_production: {STAGE: prod}\n"), 0o644)
	eco := filepath.Join(dir, "ecosystem.config.js")
	os.WriteFile(eco, []byte("module.exports = { apps: [{ name: 'b', script: '/bin/sleep', args: '600', interpreter: 'none',\n  env: { STAGE: 'dev' }, env_production: { STAGE: 'prod', NODE_ENV: 'production' } }] };\n"), 0o644)

	e.ok("start", yaml, "--env", "production")
	e.ok("startOrReload", eco, "--env", "production")
	a, b := e.describe("a").Spec.Env, e.describe("b").Spec.Env
	if a["STAGE"] != "prod" || a["KEEP"] != "yes" || b["STAGE"] != "prod" || b["NODE_ENV"] != "production" {
		t.Fatalf("env with --env production: a %v, b %v", a, b)
	}
	// Back to the plain env: the variable only env_production set is gone.
	if out := e.ok("restart", eco); !strings.Contains(out, "b: restarted (env NODE_ENV, env STAGE changed; 1 instance)") {
		t.Fatalf("restart without --env: %q", out)
	}
	if b := e.describe("b").Spec.Env; b["STAGE"] != "dev" || b["NODE_ENV"] != "" {
		t.Fatalf("env after restart without --env: %v", b)
	}
	r := e.keel("start", yaml, "--env", "staging")
	if r.code != 1 || !strings.Contains(r.err, "no app has an env_staging block") {
		t.Fatalf("--env staging: exit %d %q", r.code, r.err)
	}
}

// TestFileEnvSurvivesResurrect: the environment a file gave an app (the
// applying shell's, then env, then env_production) is the one it gets
// again after save, kill and resurrect from a shell without those variables.
func TestFileEnvSurvivesResurrect(t *testing.T) {
	e := newEnv(t)
	cfg := filepath.Join(t.TempDir(), "keel.yaml")
	src := fmt.Sprintf("apps:\n  - name: envy\n    script: %s\n    env: {KEEL_E2E_APP: env, KEEL_E2E_SHELL: file}\n    env_production: {KEEL_E2E_SHELL: production}\n", os.Args[0])
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.keelWith([]string{"KEEL_E2E_SHELL=shell", "KEEL_E2E_DAEMON=applier"}, "start", cfg, "--env", "production"); r.code != 0 {
		t.Fatalf("keel start: exit %d: %s", r.code, r.err)
	}
	want := `from the shell: "production", from the daemon: "applier"`
	poll.Until(t, 10*time.Second, "the app to print its environment", func() bool {
		return strings.Contains(e.ok("logs", "envy", "--raw"), want)
	})
	e.waitFor("online", allStatus("envy", 1, "online"))
	count := func() int { return strings.Count(e.ok("logs", "envy", "--raw"), want) }
	// A new daemon: keel kill leaves the app defined and stopped; starting
	// it from a shell without the variables gives the same env.
	e.ok("save")
	e.ok("kill")
	e.ok("restart", "envy")
	if !poll.Within(10*time.Second, func() bool { return count() == 2 }) {
		t.Fatalf("after a new daemon: ls %s\nlogs %s", e.ok("ls"), e.ok("logs", "envy", "--raw"))
	}
	// resurrect from the dump after a delete: the same env again.
	e.ok("delete", "envy")
	e.ok("resurrect")
	if !poll.Within(10*time.Second, func() bool { c := count(); return c == 3 || c == 1 }) {
		t.Fatalf("after resurrect: ls %s\nlogs %s", e.ok("ls"), e.ok("logs", "envy", "--raw"))
	}
	if out := e.ok("start", cfg, "--env", "production"); strings.TrimSpace(out) != "envy: unchanged" {
		t.Fatalf("the same file after resurrect: %q", out)
	}
}
