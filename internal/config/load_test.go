package config

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keel-run/keel/internal/spec"
)

// normalized returns a with Normalize applied, for expectations.
func normalized(a spec.App) *spec.App {
	a.Normalize()
	return &a
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	require.NoError(t, err)
	return a
}

// keelApps is what testdata/keel/keel.{yaml,json,toml} hold.
func keelApps(t *testing.T) []*spec.App {
	dir := abs(t, "testdata/keel")
	return []*spec.App{
		normalized(spec.App{
			Name:           "api",
			Script:         filepath.Join(dir, "server.js"),
			Args:           []string{"--port", "3000", "--mode", "fast start"},
			Cwd:            dir,
			Env:            map[string]string{"NODE_ENV": "production", "WORKERS": "4", "DEBUG": "false"},
			Instances:      4,
			Listen:         []string{":3000"},
			Ready:          "listen",
			ReadyTimeout:   spec.Duration(10 * time.Second),
			KillTimeout:    spec.Duration(8 * time.Second),
			MaxMemory:      300 << 20,
			Watch:          []string{filepath.Join(dir, "lib")},
			WatchIgnore:    []string{"node_modules"},
			HealthURL:      "http://127.0.0.1:3000/health",
			HealthInterval: spec.Duration(5 * time.Second),
		}),
		normalized(spec.App{
			Name:            "worker",
			Script:          filepath.Join(dir, "jobs", "worker.py"),
			Cwd:             filepath.Join(dir, "jobs"),
			InterpreterArgs: []string{"-u"},
			Restart:         "on-failure",
			StopExitCodes:   []int{0, 3},
			MinUptime:       spec.Duration(2 * time.Second),
			MaxRestarts:     5,
			RestartDelay:    spec.Duration(250 * time.Millisecond),
			BackoffMax:      spec.Duration(time.Minute),
			KillSignal:      "SIGINT",
			LogMaxSize:      1 << 30,
			LogKeep:         3,
			OnCrash:         "./notify.sh",
		}),
		normalized(spec.App{
			Name:        "tool",
			Script:      filepath.Join(dir, "bin", "tool"),
			Args:        []string{"--verbose", "two words"},
			Cwd:         dir,
			CronRestart: "0 3 * * *",
			KillTimeout: spec.Duration(8 * time.Second),
		}),
	}
}

func TestLoadKeelFormats(t *testing.T) {
	for _, name := range []string{"keel.yaml", "keel.json", "keel.toml"} {
		t.Run(name, func(t *testing.T) {
			apps, err := Load(filepath.Join("testdata/keel", name))
			require.NoError(t, err)
			require.Equal(t, keelApps(t), apps)
		})
	}
}

// needNode skips a test when no real node is in PATH (TestMain's stand-in
// does not count).
func needNode(t *testing.T) {
	t.Helper()
	if p, err := exec.LookPath("node"); err != nil || exec.Command(p, "-e", "").Run() != nil {
		t.Skip("SKIP: node is not in PATH, so JavaScript ecosystem files cannot be evaluated here")
	}
}

// pm2Apps is what testdata/pm2/ecosystem.config.{js,json} hold.
func pm2Apps(t *testing.T) []*spec.App {
	dir := abs(t, "testdata/pm2")
	return []*spec.App{
		normalized(spec.App{
			Name:            "web",
			Script:          filepath.Join(dir, "server.js"),
			Args:            []string{"--port", "3000"},
			InterpreterArgs: []string{"--max-old-space-size=256"},
			Cwd:             dir,
			Env:             map[string]string{"NODE_ENV": "production", "WORKERS": "2", "PORT": "3000"},
			Instances:       runtime.NumCPU(),
			Cluster:         true,
			Ready:           spec.ReadyMessage,
			ReadyTimeout:    spec.Duration(8 * time.Second),
			KillTimeout:     spec.Duration(3 * time.Second),
			MaxMemory:       150 << 20,
			Watch:           []string{dir},
			WatchIgnore:     []string{"node_modules", "logs"},
			RestartDelay:    spec.Duration(100 * time.Millisecond),
			MinUptime:       spec.Duration(5 * time.Second),
			MaxRestarts:     10,
			CronRestart:     "0 0 * * *",
		}),
		normalized(spec.App{
			Name:          "jobs",
			Script:        filepath.Join(dir, "jobs", "worker.py"),
			Cwd:           filepath.Join(dir, "jobs"),
			Interpreter:   "python3",
			Instances:     1,
			Restart:       spec.RestartNever,
			StopExitCodes: []int{0},
			RestartDelay:  spec.Duration(2 * time.Second),
		}),
	}
}

func TestLoadPM2JSON(t *testing.T) {
	apps, err := Load("testdata/pm2/ecosystem.config.json")
	require.NoError(t, err)
	require.Equal(t, pm2Apps(t), apps)
}

func TestLoadPM2JavaScript(t *testing.T) {
	needNode(t)
	apps, err := Load("testdata/pm2/ecosystem.config.js")
	require.NoError(t, err)
	require.Equal(t, pm2Apps(t), apps)
}

func TestLoadPM2ESModule(t *testing.T) {
	needNode(t)
	dir := abs(t, "testdata/esm")
	apps, err := Load("testdata/esm/ecosystem.config.mjs")
	require.NoError(t, err)
	require.Equal(t, []*spec.App{normalized(spec.App{
		Name: "esm-web", Script: filepath.Join(dir, "server.js"), Cwd: dir, Instances: 2, Cluster: true,
	})}, apps)
	require.Equal(t, spec.ReadyListen, apps[0].Ready, "a clustered node app is ready when it listens")
}

// write puts files (name → content) in a new directory and returns it.
// Names ending in ".sh" or under bin/ are made executable.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") || strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
	}
	return dir
}

// loadErr loads content written as file name (next to server.js, worker.py
// and bin/tool) and returns the error text with the directory replaced by
// "DIR" and the file path by its base name.
func loadErr(t *testing.T, name, content string) string {
	t.Helper()
	dir := write(t, map[string]string{
		name: content, "server.js": "", "worker.py": "", "bin/tool": "#!/bin/sh\n", "notexec": "", "sub/x.js": "",
		"my server.js": "",
	})
	apps, err := Load(filepath.Join(dir, name))
	require.Error(t, err, "loaded %v", apps)
	require.Nil(t, apps, "a bad file returns no apps")
	var ce *Error
	require.ErrorAs(t, err, &ce)
	msg := err.Error()
	require.NotContains(t, msg, "\n", "errors are one line")
	msg = strings.ReplaceAll(msg, filepath.Join(dir, name), name)
	return strings.ReplaceAll(msg, dir, "DIR")
}

func TestLoadErrorsYAML(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"bad instances", `apps:
  - name: a
    script: server.js
  - name: b
    script: server.js

    instances: lots
`, `keel.yaml:7: apps[1].instances: "lots" is not a number or "max"`},
		{"zero instances", "apps:\n  - script: server.js\n    instances: 0\n",
			`keel.yaml:3: apps[0].instances: 0: want at least 1, or "max" for one per CPU`},
		{"unknown key with suggestion", "apps:\n  - script: server.js\n    instnaces: 2\n",
			`keel.yaml:3: apps[0].instnaces: unknown key (did you mean instances?)`},
		{"unknown key far from all", "apps:\n  - script: server.js\n    colour: blue\n",
			`keel.yaml:3: apps[0].colour: unknown key`},
		{"pm2 key in a keel file", "apps:\n  - script: server.js\n    max_memory_restart: 1G\n",
			`keel.yaml:3: apps[0].max_memory_restart: is pm2's key; in a keel file write max_memory (or name the file ecosystem.config.* to read pm2 keys)`},
		{"pm2 log key in a keel file", "apps:\n  - script: server.js\n    out_file: x.log\n",
			`keel.yaml:3: apps[0].out_file: is pm2's key, which keel files do not take; remove it, or name the file ecosystem.config.* to read pm2 keys`},
		{"pm2 uid in a keel file", "apps:\n  - script: server.js\n    uid: 1000\n",
			`keel.yaml:3: apps[0].uid: is pm2's key, which keel files do not take; remove it, or name the file ecosystem.config.* to read pm2 keys`},
		{"bad duration", "apps:\n  - script: server.js\n    kill_timeout: soon\n",
			`keel.yaml:3: apps[0].kill_timeout: duration "soon": want e.g. 500ms, 3s, 1m or milliseconds`},
		{"negative duration", "apps:\n  - script: server.js\n    kill_timeout: -5\n",
			`keel.yaml:3: apps[0].kill_timeout: duration "-5" is negative`},
		{"duration as a list", "apps:\n  - script: server.js\n    min_uptime: [1s]\n",
			`keel.yaml:3: apps[0].min_uptime: want a duration (500ms, 3s, 1m or milliseconds), got a list`},
		{"bad size", "apps:\n  - script: server.js\n    max_memory: lots\n",
			`keel.yaml:3: apps[0].max_memory: size "lots": want e.g. 300M, 1G or a number of bytes`},
		{"bool for a number", "apps:\n  - script: server.js\n    max_restarts: true\n",
			`keel.yaml:3: apps[0].max_restarts: want a number, got true`},
		{"negative number", "apps:\n  - script: server.js\n    log_keep: -1\n",
			`keel.yaml:3: apps[0].log_keep: -1: must not be negative`},
		{"bad bool", "apps:\n  - script: server.js\n    cluster: maybe\n",
			`keel.yaml:3: apps[0].cluster: "maybe" is not true or false`},
		{"env nested", "apps:\n  - script: server.js\n    env:\n      A: 1\n      B: {c: d}\n",
			`keel.yaml:3: apps[0].env: B: want a string, number or boolean, got a map`},
		{"env not a map", "apps:\n  - script: server.js\n    env: FOO\n",
			`keel.yaml:3: apps[0].env: want a map of NAME: value, got "FOO"`},
		{"list of maps", "apps:\n  - script: server.js\n    listen: [{port: 3}]\n",
			`keel.yaml:3: apps[0].listen: want a list of values, got a map in it`},
		{"bad exit code", "apps:\n  - script: server.js\n    stop_exit_codes: [0, 300]\n",
			`keel.yaml:3: apps[0].stop_exit_codes: "300" is not an exit code (0-255)`},
		{"unterminated quote in args", "apps:\n  - script: server.js\n    args: --name 'x\n",
			`keel.yaml:3: apps[0].args: "--name 'x": unterminated single quote`},
		{"bad restart", "apps:\n  - script: server.js\n    name: a\n    restart: sometimes\n",
			`keel.yaml:4: apps[0].restart: "sometimes": want always, on-failure or never`},
		{"bad ready", "apps:\n  - script: server.js\n    ready: soon\n",
			`keel.yaml:3: apps[0].ready: "soon": want notify, message, listen, none, tcp://host:port or http://host:port/path`},
		{"bad signal", "apps:\n  - script: server.js\n    kill_signal: SIGFOO\n",
			`keel.yaml:3: apps[0].kill_signal: "SIGFOO" is not a signal name (e.g. SIGTERM, SIGINT, SIGQUIT)`},
		{"backoff below delay", "apps:\n  - script: server.js\n    restart_delay: 2s\n    backoff_max: 1s\n",
			`keel.yaml:4: apps[0].backoff_max: 1s is less than restart_delay 2s`},
		{"bad name", "apps:\n  - script: server.js\n    name: my app\n",
			`keel.yaml:3: apps[0].name: "my app" is not a valid app name (letters, digits, '.', '_', '-'; not "all")`},
		{"name from script", "apps:\n  - script: ./my server.js\n",
			`keel.yaml:2: apps[0].name: "my server" is not a valid app name (letters, digits, '.', '_', '-'; not "all"); it comes from the script's name, so set name`},
		{"no script", "apps:\n  - name: a\n    instances: 2\n",
			`keel.yaml:2: apps[0].script: is required`},
		{"no script, no name", "apps:\n  - instances: 2\n",
			`keel.yaml:2: apps[0].script: is required`},
		{"duplicate names", "apps:\n  - name: api\n    script: server.js\n  - name: web\n    script: server.js\n  - name: api\n    script: worker.py\n",
			`keel.yaml:6: apps[2].name: "api" is already the name of apps[0] (line 2); give each app its own name`},
		{"duplicate default names", "apps:\n  - script: server.js\n  - script: ./server.js\n",
			`keel.yaml:3: apps[1].name: "server" is already the name of apps[0] (line 2); give each app its own name`},
		{"duplicate key", "apps:\n  - script: server.js\n    name: a\n    name: b\n",
			`keel.yaml:4: key "name" appears twice (first on line 3)`},
		{"missing script file", "apps:\n  - name: a\n    script: ./srv.js\n",
			`keel.yaml:3: apps[0].script: "./srv.js": no such file in DIR`},
		{"script is a directory", "apps:\n  - name: a\n    script: sub\n    interpreter: none\n",
			`keel.yaml:3: apps[0].script: "sub" is a directory, not a file`},
		{"script not executable", "apps:\n  - script: ./notexec\n",
			`keel.yaml:2: apps[0].script: "./notexec" is not executable: chmod +x it, or set interpreter`},
		{"bare command not found", "apps:\n  - script: no-such-command-keel\n",
			`keel.yaml:2: apps[0].script: "no-such-command-keel": no such file in DIR, and no command of that name in PATH`},
		{"command with arguments", "apps:\n  - script: npm-keel start\n",
			`keel.yaml:2: apps[0].script: "npm-keel start": no such file in DIR, and no command of that name in PATH (put its arguments in args)`},
		{"script relative to cwd", "apps:\n  - script: server.js\n    cwd: sub\n",
			`keel.yaml:2: apps[0].script: "server.js": no such file in DIR/sub`},
		{"missing cwd", "apps:\n  - script: server.js\n    cwd: nowhere\n",
			`keel.yaml:3: apps[0].cwd: "nowhere": no such directory`},
		{"missing interpreter", "apps:\n  - script: worker.py\n    interpreter: python9-keel\n",
			`keel.yaml:3: apps[0].interpreter: "python9-keel": no such command in PATH`},
		{"missing apps", "name: api\n",
			`keel.yaml:1: name: unknown top-level key: want apps (keys starting x- are free for your own use)`},
		{"empty file", "",
			`keel.yaml:1: apps: missing: want a top-level apps list, e.g. apps: [{name: api, script: server.js}]`},
		{"empty apps", "apps: []\n", `keel.yaml:1: apps: is empty: list at least one app`},
		{"apps not a list", "apps:\n  api:\n    script: server.js\n", `keel.yaml:1: apps: want a list of apps, got a map`},
		{"app not a map", "apps:\n  - server.js\n", `keel.yaml:2: apps[0]: want an app (a map of options), got "server.js"`},
		{"syntax error", "apps:\n  - name: a\n    script: server.js\n   bad: indent\n",
			`keel.yaml:4: did not find expected '-' indicator`},
		{"unclosed list", "apps:\n  - name: a\n    script: [server.js\n",
			`keel.yaml:3: did not find expected ',' or ']'`},
		{"bad value after a flow list", "apps:\n  - args: [a,\n      b]\n    name: : x\n",
			`keel.yaml:4: mapping values are not allowed in this context`},
		{"tab", "apps:\n  - name: a\n\tscript: x\n",
			`keel.yaml:3: found a tab character that violates indentation`},
		{"two documents", "apps:\n  - script: server.js\n---\napps: []\n",
			`keel.yaml:3: a second YAML document; put every app in one apps list`},
		// Found by FuzzLoadYAML: the error comes from the second
		// document, and the YAML library gives it no line.
		{"junk after the document", "\"\"00\n",
			`keel.yaml:1: did not find expected <document start>`},
		// Found by the FuzzLoadYAML seeds: took seconds to refuse.
		{"alias inside its anchor", "x: &x\n  <<: *x\napps: [{script: server.js}]\n",
			`keel.yaml:2: alias *x is inside its own anchor`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, loadErr(t, "keel.yaml", c.content))
		})
	}
}

func TestLoadErrorsJSON(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"bad instances", `{"apps": [
  {"script": "server.js"},
  {"script": "worker.py",
   "instances": "lots"}
]}`, `keel.json:4: apps[1].instances: "lots" is not a number or "max"`},
		{"unknown key", `{"apps": [{"script": "server.js",
  "kill_timout": 5}]}`, `keel.json:2: apps[0].kill_timout: unknown key (did you mean kill_timeout?)`},
		{"syntax error", "{\"apps\": [\n  {\"script\": \"server.js\",}\n  {}\n]}",
			`keel.json:3: invalid character '{' after array element`},
		{"truncated", "{\"apps\": [\n  {\"script\": \"server.js\"}\n", `keel.json:3: unexpected end of JSON`},
		{"duplicate key", "{\"apps\": [{\"script\": \"server.js\",\n \"script\": \"worker.py\"}]}",
			`keel.json:2: key "script" appears twice (first on line 1)`},
		{"trailing data", "{\"apps\": [{\"script\": \"server.js\"}]}\n{}",
			`keel.json:2: more after the end of the top-level value`},
		{"no apps", `{"name": "x"}`, `keel.json:1: name: unknown top-level key: want apps (keys starting x- are free for your own use)`},
		{"top-level list", `[{"script": "server.js"}]`,
			`keel.json:1: apps: missing: want a top-level apps list, e.g. apps: [{name: api, script: server.js}]`},
		{"bad size", "{\"apps\": [{\"script\": \"server.js\",\n\n \"log_max_size\": true}]}",
			`keel.json:3: apps[0].log_max_size: want a size (300M, 1G or bytes), got true`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, loadErr(t, "keel.json", c.content))
		})
	}
}

func TestLoadErrorsTOML(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"bad instances in second app", `[[apps]]
name = "a"
script = "server.js"

[[apps]]
name = "b"
script = "server.js"
# a comment: instances = 3
instances = "lots"
`, `keel.toml:9: apps[1].instances: "lots" is not a number or "max"`},
		{"unknown key", "[[apps]]\nscript = \"server.js\"\n\n[[apps]]\nscript = \"worker.py\"\nwatchh = [\"a\"]\n",
			`keel.toml:6: apps[1].watchh: unknown key (did you mean watch?)`},
		{"env table", "[[apps]]\nscript = \"server.js\"\n[apps.env]\nA = 1\nB = [1]\n",
			`keel.toml:3: apps[0].env: B: want a string, number or boolean, got a list`},
		{"syntax error", "[[apps]]\nscript = \"server.js\"\ninstances = \n",
			`keel.toml:3: expected value but found '\n' instead`},
		{"inline form", "apps = [\n  { script = \"server.js\" },\n  { script = \"worker.py\", kill_timeout = \"x\" },\n]\n",
			`keel.toml:3: apps[1].kill_timeout: duration "x": want e.g. 500ms, 3s, 1m or milliseconds`},
		{"date", "[[apps]]\nscript = \"server.js\"\nmin_uptime = 1979-05-27\n",
			`keel.toml:3: apps[0].min_uptime: want a duration (500ms, 3s, 1m or milliseconds), got "1979-05-27"`},
		{"duplicate names", "[[apps]]\nname = \"x\"\nscript = \"server.js\"\n[[apps]]\nname = \"x\"\nscript = \"worker.py\"\n",
			`keel.toml:5: apps[1].name: "x" is already the name of apps[0] (line 2); give each app its own name`},
		{"missing apps", "name = \"x\"\n", `keel.toml:1: name: unknown top-level key: want apps (keys starting x- are free for your own use)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, loadErr(t, "keel.toml", c.content))
		})
	}
}

func TestLoadErrorsPM2JSON(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"bad exec_mode", "{\"apps\": [{\"script\": \"server.js\",\n \"exec_mode\": \"threads\"}]}",
			`ecosystem.config.json:2: apps[0].exec_mode: "threads": want cluster or fork`},
		{"uid", "{\"apps\": [{\"script\": \"server.js\",\n \"uid\": 1000}]}",
			`ecosystem.config.json:2: apps[0].uid: is not supported: keel runs apps as the user running keel; run keel as that user instead`},
		{"treekill false", "{\"apps\": [{\"script\": \"server.js\",\n \"treekill\": false}]}",
			`ecosystem.config.json:2: apps[0].treekill: false is not supported: keel always stops the whole process group`},
		{"shutdown_with_message", "{\"apps\": [{\"script\": \"server.js\", \"shutdown_with_message\": true}]}",
			`ecosystem.config.json:1: apps[0].shutdown_with_message: true is not supported: keel stops an instance with kill_signal; handle that signal (or set kill_signal) instead`},
		{"alias conflict", "{\"apps\": [{\"script\": \"server.js\",\n \"interpreter_args\": \"--a\",\n \"node_args\": \"--b\"}]}",
			`ecosystem.config.json:3: apps[0].node_args: sets the same option as interpreter_args (line 2); keep one`},
		{"backoff conflict", "{\"apps\": [{\"script\": \"server.js\",\n \"restart_delay\": 100,\n \"exp_backoff_restart_delay\": 200}]}",
			`ecosystem.config.json:3: apps[0].exp_backoff_restart_delay: sets the same option as restart_delay (line 2); keep one`},
		{"bad max_memory_restart", "{\"apps\": [{\"script\": \"server.js\",\n \"max_memory_restart\": \"lots\"}]}",
			`ecosystem.config.json:2: apps[0].max_memory_restart: size "lots": want e.g. 300M, 1G or a number of bytes`},
		{"bad listen_timeout", "{\"apps\": [{\"script\": \"server.js\",\n \"listen_timeout\": \"x\"}]}",
			`ecosystem.config.json:2: apps[0].listen_timeout: duration "x": want e.g. 500ms, 3s, 1m or milliseconds`},
		{"unknown pm2 key", "{\"apps\": [{\"script\": \"server.js\",\n \"exec_mod\": \"cluster\"}]}",
			`ecosystem.config.json:2: apps[0].exec_mod: unknown key (did you mean exec_mode?)`},
		{"bad wait_ready", "{\"apps\": [{\"script\": \"server.js\",\n \"wait_ready\": \"soon\"}]}",
			`ecosystem.config.json:2: apps[0].wait_ready: "soon" is not true or false`},
		{"bad instances", "{\"apps\": [{\"script\": \"server.js\",\n \"instances\": \"many\"}]}",
			`ecosystem.config.json:2: apps[0].instances: "many" is not a number or "max"`},
		{"unknown top-level", "{\"apps\": [{\"script\": \"server.js\"}],\n \"extra\": 1}",
			`ecosystem.config.json:2: extra: unknown top-level key: want apps or deploy (keys starting x- are free for your own use)`},
		{"missing script file", "{\"apps\": [\n{\"name\": \"x\",\n \"script\": \"./srv.js\"}]}",
			`ecosystem.config.json:3: apps[0].script: "./srv.js": no such file in DIR`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, loadErr(t, "ecosystem.config.json", c.content))
		})
	}
}

func TestLoadPM2Instances(t *testing.T) {
	cpus := runtime.NumCPU()
	for in, want := range map[string]int{
		`"max"`: cpus, `0`: cpus, `-1`: max(cpus-1, 1), `-1000`: 1, `3`: 3, `"2"`: 2,
	} {
		dir := write(t, map[string]string{"server.js": "",
			"ecosystem.json": `{"apps": [{"script": "server.js", "instances": ` + in + `}]}`})
		apps, err := Load(filepath.Join(dir, "ecosystem.json"))
		require.NoError(t, err, in)
		require.Equal(t, want, apps[0].Instances, in)
	}
}

// TestLoadPM2Aliases checks each pm2 name lands on keel's option.
func TestLoadPM2Aliases(t *testing.T) {
	cases := []struct {
		key, value string
		check      func(a *spec.App) bool
	}{
		{"exec_interpreter", `"sh"`, func(a *spec.App) bool { return a.Interpreter == "sh" }},
		{"node_args", `["--a", "--b"]`, func(a *spec.App) bool { return len(a.InterpreterArgs) == 2 }},
		{"listen_timeout", `1500`, func(a *spec.App) bool { return a.ReadyTimeout.D() == 1500*time.Millisecond }},
		{"max_memory_restart", `"512K"`, func(a *spec.App) bool { return a.MaxMemory == 512<<10 }},
		{"exp_backoff_restart_delay", `300`, func(a *spec.App) bool { return a.RestartDelay.D() == 300*time.Millisecond }},
		{"cron", `"0 * * * *"`, func(a *spec.App) bool { return a.CronRestart == "0 * * * *" }},
		{"ignore_watch", `"tmp"`, func(a *spec.App) bool { return a.WatchIgnore[0] == "tmp" }},
		{"exec_mode", `"cluster"`, func(a *spec.App) bool { return a.Cluster }},
		{"wait_ready", `true`, func(a *spec.App) bool { return a.Ready == spec.ReadyMessage }},
		{"autorestart", `false`, func(a *spec.App) bool { return a.Restart == spec.RestartNever }},
		{"port", `8080`, func(a *spec.App) bool { return a.Env["PORT"] == "8080" }},
		{"watch", `["src"]`, func(a *spec.App) bool { return strings.HasSuffix(a.Watch[0], "/src") }},
		{"instance_var", `"NODE_APP_INSTANCE"`, func(a *spec.App) bool { return true }},
		{"filter_env", `false`, func(a *spec.App) bool { return true }},
		{"kill_signal", `"SIGINT"`, func(a *spec.App) bool { return a.KillSignal == "SIGINT" }},
		{"health_url", `"http://127.0.0.1:1/h"`, func(a *spec.App) bool { return a.HealthURL != "" }},
	}
	for _, c := range cases {
		dir := write(t, map[string]string{"server.js": "",
			"ecosystem.json": `{"apps": [{"script": "server.js", "` + c.key + `": ` + c.value + `}]}`})
		apps, err := Load(filepath.Join(dir, "ecosystem.json"))
		require.NoError(t, err, c.key)
		require.True(t, c.check(apps[0]), "%s: %+v", c.key, apps[0])
	}
	for _, k := range IgnoredPM2Keys() {
		dir := write(t, map[string]string{"server.js": "",
			"ecosystem.json": `{"apps": [{"script": "server.js", "` + k + `": "x", "env_staging": {"A": 1}}]}`})
		_, err := Load(filepath.Join(dir, "ecosystem.json"))
		require.NoError(t, err, k)
	}
}

func TestLoadPM2TopLevelList(t *testing.T) {
	dir := write(t, map[string]string{"server.js": "",
		"ecosystem.json": `[{"name": "a", "script": "server.js", "autorestart": true, "wait_ready": false}]`})
	apps, err := Load(filepath.Join(dir, "ecosystem.json"))
	require.NoError(t, err)
	require.Len(t, apps, 1)
	require.Equal(t, spec.RestartAlways, apps[0].Restart)
	require.Equal(t, spec.ReadyNone, apps[0].Ready)
}

func TestLoadPM2JavaScriptErrors(t *testing.T) {
	needNode(t)
	cases := []struct {
		name, content, want string
	}{
		{"bad value has no line", "module.exports = {apps: [{script: 'server.js',\n max_memory_restart: 'lots'}]};\n",
			`ecosystem.config.js: apps[0].max_memory_restart: size "lots": want e.g. 300M, 1G or a number of bytes`},
		{"throws", "const x = 1;\nthrow new Error('no config for you');\n",
			`ecosystem.config.js:2: evaluating it with node: Error: no config for you`},
		{"syntax error", "module.exports = {\n  apps: [\n    {script: 'server.js',,}\n  ]\n};\n",
			`ecosystem.config.js:3: evaluating it with node: SyntaxError: Unexpected token ','`},
		{"exports nothing", "const apps = [];\n",
			`ecosystem.config.js: apps: missing: want a top-level apps list, e.g. apps: [{name: api, script: server.js}]`},
		{"not JSON", "module.exports = {apps: [{script: 'server.js', n: 10n}]};\n",
			`ecosystem.config.js: evaluating it with node: cannot turn the exports into JSON: Do not know how to serialize a BigInt`},
		{"unknown key", "module.exports = {apps: [{script: 'server.js', instancse: 2}]};\n",
			`ecosystem.config.js: apps[0].instancse: unknown key (did you mean instances?)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, loadErr(t, "ecosystem.config.js", c.content))
		})
	}
}

func TestLoadJavaScriptWithoutNode(t *testing.T) {
	dir := write(t, map[string]string{"server.js": "", "ecosystem.config.js": "module.exports = {apps: []};\n"})
	t.Setenv("PATH", t.TempDir())
	_, err := Load(filepath.Join(dir, "ecosystem.config.js"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "ecosystem.config.js: reading a JavaScript config needs node, and node is not in PATH")
}

func TestEvalJSTimeout(t *testing.T) {
	needNode(t)
	dir := write(t, map[string]string{"ecosystem.config.js": "for (;;) {}\n"})
	_, err := evalJS(filepath.Join(dir, "ecosystem.config.js"), 300*time.Millisecond)
	require.ErrorContains(t, err, "node did not finish evaluating it within 300ms")
}

func TestLoadUnreadable(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "keel.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Contains(t, err.Error(), "reading config: open ")

	_, err = Load("server.js")
	require.EqualError(t, err, "server.js: not a config file: want .yaml, .yml, .toml, .json or ecosystem.config.js")
}

func TestLoadPaths(t *testing.T) {
	dir := write(t, map[string]string{
		"keel.yaml": `apps:
  - name: rel
    script: bin/tool
  - name: incwd
    cwd: svc
    script: run.sh
    watch: true
  - name: abscwd
    cwd: ` + "ABS" + `
    script: ./srv.js
    watch: [src, /etc/hosts-keel]
  - name: command
    script: sh
    args: -c 'exec true'
  - name: interp
    script: app.py
    interpreter: ./venv/python.sh
`,
		"bin/tool": "#!/bin/sh\n", "svc/run.sh": "#!/bin/sh\n", "other/srv.js": "", "app.py": "", "venv/python.sh": "#!/bin/sh\n",
	})
	other := filepath.Join(dir, "other")
	p := filepath.Join(dir, "keel.yaml")
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(data), "ABS", other, 1)), 0o644))

	t.Chdir(t.TempDir()) // paths resolve against the file, not the process
	apps, err := Load(p)
	require.NoError(t, err)
	require.Len(t, apps, 5)

	require.Equal(t, dir, apps[0].Cwd)
	require.Equal(t, filepath.Join(dir, "bin/tool"), apps[0].Script)

	require.Equal(t, filepath.Join(dir, "svc"), apps[1].Cwd)
	require.Equal(t, filepath.Join(dir, "svc/run.sh"), apps[1].Script)
	require.Equal(t, []string{filepath.Join(dir, "svc")}, apps[1].Watch)

	require.Equal(t, other, apps[2].Cwd)
	require.Equal(t, filepath.Join(other, "srv.js"), apps[2].Script)
	require.Equal(t, []string{filepath.Join(other, "src"), "/etc/hosts-keel"}, apps[2].Watch)

	require.Equal(t, "sh", apps[3].Script, "a command from PATH is kept as written")
	require.Equal(t, []string{"-c", "exec true"}, apps[3].Args)
	require.Equal(t, "command", apps[3].Name)

	require.Equal(t, filepath.Join(dir, "venv/python.sh"), apps[4].Interpreter)
	require.Equal(t, []string{filepath.Join(dir, "venv/python.sh"), filepath.Join(dir, "app.py")}, apps[4].Argv())
}

func TestLoadRelativePathGiven(t *testing.T) {
	dir := write(t, map[string]string{"conf/keel.yaml": "apps:\n  - script: ../srv.js\n", "srv.js": ""})
	t.Chdir(dir)
	apps, err := Load("conf/keel.yaml")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "conf"), apps[0].Cwd)
	require.Equal(t, filepath.Join(dir, "srv.js"), apps[0].Script)

	_, err = Load("conf/missing.yaml")
	require.Error(t, err)
}

func TestLoadYAMLAnchorsAndNulls(t *testing.T) {
	dir := write(t, map[string]string{"server.js": "", "keel.yml": `x-common: &common
  kill_timeout: 2s
  env: {A: "1"}
apps:
  - <<: *common
    name: one
    script: server.js
  - <<: *common
    name: two
    script: server.js
    kill_timeout: 3s
    max_memory:
    env:
      B: ~
`})
	apps, err := Load(filepath.Join(dir, "keel.yml"))
	require.NoError(t, err)
	require.Equal(t, spec.Duration(2*time.Second), apps[0].KillTimeout)
	require.Equal(t, map[string]string{"A": "1"}, apps[0].Env)
	require.Equal(t, spec.Duration(3*time.Second), apps[1].KillTimeout, "the app's own key wins over a merged one")
	require.Equal(t, map[string]string{"B": ""}, apps[1].Env)
	require.Zero(t, apps[1].MaxMemory)
}

func TestLoadYAMLAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		b.WriteString("x-a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	got := loadErr(t, "keel.yaml", strings.Replace(b.String(), "a0: &a0", "x-a0: &a0", 1))
	require.Contains(t, got, "too many values")
}

func TestLoadJSONComments(t *testing.T) {
	dir := write(t, map[string]string{"server.js": "", "keel.json": `// keel config
{
  /* one app */
  "apps": [
    {"script": "server.js", "env": {"URL": "http://x//y/*z*/"},},
  ],
}
`})
	apps, err := Load(filepath.Join(dir, "keel.json"))
	require.NoError(t, err)
	require.Equal(t, "http://x//y/*z*/", apps[0].Env["URL"], "comment markers inside strings are kept")
}

func TestIsConfigFile(t *testing.T) {
	for path, want := range map[string]bool{
		"keel.yaml": true, "keel.yml": true, "x/keel.toml": true, "keel.json": true,
		"ecosystem.config.js": true, "ecosystem.config.cjs": true, "ecosystem.config.mjs": true,
		"ecosystem.config.json": true, "ecosystem.json": true, "ecosystem.js": true, "pm2.config.js": true,
		"apps.config.cjs": true, "KEEL.YAML": true,
		"server.js": false, "app.mjs": false, "worker.py": false, "bin/server": false, "config.js": false,
		"main.go": false, "": false,
	} {
		require.Equal(t, want, IsConfigFile(path), path)
	}
}

func TestErrorText(t *testing.T) {
	inner := errors.New("boom")
	for want, e := range map[string]*Error{
		"f.yaml:3: apps[0].x: boom": {File: "f.yaml", Line: 3, Key: "apps[0].x", Err: inner},
		"f.js: apps[0].x: boom":     {File: "f.js", Key: "apps[0].x", Err: inner},
		"--instances: boom":         {Key: "--instances", Err: inner},
		"f.yaml:1: boom":            {File: "f.yaml", Line: 1, Err: inner},
	} {
		require.Equal(t, want, e.Error())
		require.ErrorIs(t, e, inner)
	}
	require.Equal(t, "f: a; b; c", (&Error{File: "f", Err: errors.New("a\n  b\nc")}).Error())
}
