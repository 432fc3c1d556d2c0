package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keel-run/keel/internal/spec"
)

// kindOf is the option kind a spec.App field's type calls for.
func kindOf(t reflect.Type) Kind {
	switch t {
	case reflect.TypeOf(spec.Duration(0)):
		return Duration
	case reflect.TypeOf(spec.Size(0)):
		return Size
	}
	switch t.Kind() {
	case reflect.String:
		return String
	case reflect.Int:
		return Int
	case reflect.Bool:
		return Bool
	case reflect.Slice:
		return List
	case reflect.Map:
		return Env
	case reflect.Pointer: // an option whose default is not the zero value
		return kindOf(t.Elem())
	}
	return 0
}

// TestOptionsCoverApp keeps the option table and spec.App in step: every
// field with a JSON key has exactly one option of the right kind, and every
// option is a field.
func TestOptionsCoverApp(t *testing.T) {
	byKey := map[string]Option{}
	flags, shorts := map[string]bool{}, map[string]bool{}
	for _, o := range Options() {
		require.NotContains(t, byKey, o.Key, "option %s listed twice", o.Key)
		byKey[o.Key] = o
		require.False(t, flags[o.Flag], "flag %s used twice", o.Flag)
		flags[o.Flag] = true
		if o.Short != "" {
			require.Len(t, o.Short, 1, o.Key)
			require.False(t, shorts[o.Short], "shorthand -%s used twice", o.Short)
			shorts[o.Short] = true
		}
		require.Equal(t, strings.ReplaceAll(o.Key, "_", "-"), o.Flag, "flag is the key in kebab-case")
		require.NotEmpty(t, o.Usage, o.Key)
	}
	typ := reflect.TypeOf(spec.App{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		// shell_env: set by keel start; logs_until_read: by keel run --log-files=false; neither is a config key.
		if key == "" || key == "-" || key == "shell_env" || key == "logs_until_read" {
			continue
		}
		o, ok := byKey[key]
		require.True(t, ok, "spec.App.%s (config key %q) has no Option: add it to the table in options.go", f.Name, key)
		require.Equal(t, kindOf(f.Type), o.Kind, "option %s", key)
		delete(byKey, key)
	}
	require.Empty(t, byKey, "options that are not spec.App fields")
}

// sample is a valid text value for an option.
func sample(o Option) string {
	switch o.Key {
	case "stop_exit_codes":
		return "3"
	case "instances":
		return "3"
	}
	switch o.Kind {
	case Int:
		return "3"
	case Bool:
		return "true"
	case Duration:
		return "3s"
	case Size:
		return "1M"
	case Env:
		return "A=B"
	}
	return "x"
}

// TestSetEveryOption checks Set reaches the field of every option, by key
// and by flag.
func TestSetEveryOption(t *testing.T) {
	typ := reflect.TypeOf(spec.App{})
	field := map[string]int{}
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		field[key] = i
	}
	for _, o := range Options() {
		for _, name := range []string{o.Key, o.Flag, "--" + o.Flag} {
			var a spec.App
			require.NoError(t, Set(&a, name, sample(o)), name)
			require.False(t, reflect.ValueOf(a).Field(field[o.Key]).IsZero(), "Set(%q) left the field unset", name)
		}
	}
}

func TestSet(t *testing.T) {
	var a spec.App
	require.NoError(t, Set(&a, "i", "max"))
	require.Equal(t, runtime.NumCPU(), a.Instances)
	require.NoError(t, Set(&a, "instances", "2"))
	require.Equal(t, 2, a.Instances)

	require.NoError(t, Set(&a, "listen", ":3000"))
	require.NoError(t, Set(&a, "listen", "unix:///tmp/a.sock"))
	require.Equal(t, []string{":3000", "unix:///tmp/a.sock"}, a.Listen, "lists append")

	require.NoError(t, Set(&a, "args", `--port 3000 --name "my app" 'it''s'`))
	require.NoError(t, Set(&a, "args", `x\ y`))
	require.Equal(t, []string{"--port", "3000", "--name", "my app", "its", "x y"}, a.Args)

	require.NoError(t, Set(&a, "env", "A=1"))
	require.NoError(t, Set(&a, "env", "B=x=y"))
	require.NoError(t, Set(&a, "env", "C="))
	require.Equal(t, map[string]string{"A": "1", "B": "x=y", "C": ""}, a.Env)

	require.NoError(t, Set(&a, "stop-exit-codes", "0,2"))
	require.NoError(t, Set(&a, "stop-exit-codes", "3"))
	require.Equal(t, []int{0, 2, 3}, a.StopExitCodes)

	require.NoError(t, Set(&a, "kill-timeout", "1500"))
	require.Equal(t, spec.Duration(1500*time.Millisecond), a.KillTimeout, "a bare number is milliseconds")
	require.NoError(t, Set(&a, "max-memory", "1.5G"))
	require.Equal(t, spec.Size(3<<29), a.MaxMemory)

	require.NoError(t, Set(&a, "watch", "true"))
	require.NoError(t, Set(&a, "w", "src"))
	require.Equal(t, []string{".", "src"}, a.Watch)
	require.NoError(t, Set(&a, "watch", "false"))
	require.Empty(t, a.Watch)

	require.NoError(t, Set(&a, "cluster", "yes"))
	require.True(t, a.Cluster)
}

func TestSetErrors(t *testing.T) {
	for _, c := range []struct{ key, value, want string }{
		{"kill-timeout", "abc", `--kill-timeout: duration "abc": want e.g. 500ms, 3s, 1m or milliseconds`},
		{"kill_timeout", "-3s", `--kill-timeout: duration "-3s" is negative`},
		{"kill_timeout", "99999999999999999", `--kill-timeout: duration "99999999999999999" is too large`},
		{"instances", "lots", `--instances: "lots" is not a number or "max"`},
		{"i", "0", `--instances: 0: want at least 1, or "max" for one per CPU`},
		{"max-restarts", "many", `--max-restarts: "many" is not a whole number`},
		{"log-keep", "-2", `--log-keep: -2: must not be negative`},
		{"max-memory", "big", `--max-memory: size "big": want e.g. 300M, 1G or a number of bytes`},
		{"max-memory", "1e30T", `--max-memory: size "1e30T" is too large`},
		{"env", "NOVALUE", `--env: "NOVALUE": want KEY=VALUE`},
		{"env", "=x", `--env: "" is not an environment variable name`},
		{"stop-exit-codes", "0,x", `--stop-exit-codes: "x" is not an exit code (0-255)`},
		{"args", `"open`, `--args: "\"open": unterminated double quote`},
		{"cluster", "perhaps", `--cluster: "perhaps" is not true or false`},
		{"instnces", "2", `--instnces: unknown option (did you mean --instances?)`},
		{"--frobnicate", "2", `--frobnicate: unknown option`},
	} {
		var a spec.App
		err := Set(&a, c.key, c.value)
		require.EqualError(t, err, c.want, "%s=%s", c.key, c.value)
		var ce *Error
		require.ErrorAs(t, err, &ce)
	}
	var a spec.App
	require.NoError(t, Set(&a, "instances", "3"))
	require.Error(t, Set(&a, "instances", "lots"))
	require.Equal(t, 3, a.Instances, "a bad value leaves the old one")
}

func TestCheck(t *testing.T) {
	dir := write(t, map[string]string{"srv.js": "", "bin/tool": "#!/bin/sh\n", "sub/app.py": "", "plain": ""})
	t.Chdir(dir)

	a := &spec.App{Script: "./srv.js"}
	require.NoError(t, Set(a, "watch", "true"))
	require.NoError(t, Check(a))
	require.Equal(t, filepath.Join(dir, "srv.js"), a.Script)
	require.Equal(t, dir, a.Cwd)
	require.Equal(t, "srv", a.Name)
	require.Equal(t, []string{dir}, a.Watch)
	require.Equal(t, spec.DefaultKillTimeout, a.KillTimeout, "Check normalizes")

	a = &spec.App{Script: "app.py", Cwd: "sub"}
	require.NoError(t, Check(a))
	require.Equal(t, filepath.Join(dir, "sub/app.py"), a.Script, "script is relative to cwd")
	require.Equal(t, filepath.Join(dir, "sub"), a.Cwd)

	a = &spec.App{Script: "sh", Args: []string{"-c", "true"}}
	require.NoError(t, Check(a))
	require.Equal(t, "sh", a.Script, "a command from PATH is kept as written")

	a = &spec.App{Script: "bin/tool"}
	require.NoError(t, Check(a))
	require.Equal(t, filepath.Join(dir, "bin/tool"), a.Script)

	for _, c := range []struct {
		app  spec.App
		want string
	}{
		{spec.App{Script: "./srv2.js"}, `script: "./srv2.js": no such file in DIR`},
		{spec.App{Script: filepath.Join(dir, "nope.js")}, `script: "DIR/nope.js": no such file`},
		{spec.App{Script: "no-such-keel-cmd"}, `script: "no-such-keel-cmd": no such file in DIR, and no command of that name in PATH`},
		{spec.App{Script: "plain"}, `script: "plain" is not executable: chmod +x it, or set interpreter`},
		{spec.App{Script: "sub", Interpreter: "none"}, `script: "sub" is a directory, not a file`},
		{spec.App{}, `script: is required`},
		{spec.App{Script: "srv.js", Instances: -1}, `--instances: must be at least 1, got -1`},
		{spec.App{Script: "srv.js", Restart: "maybe"}, `--restart: "maybe": want always, on-failure or never`},
		{spec.App{Script: "srv.js", Cwd: "nowhere"}, `--cwd: "nowhere": no such directory`},
		{spec.App{Script: "srv.js", Cwd: "plain"}, `--cwd: "plain" is not a directory`},
		{spec.App{Script: "srv.js", Interpreter: "nodejs-keel-none"}, `--interpreter: "nodejs-keel-none": no such command in PATH`},
		{spec.App{Script: "srv.js", Interpreter: "./plain"}, `--interpreter: "./plain" is not an executable file`},
	} {
		a := c.app
		err := Check(&a)
		require.Error(t, err, "%+v", c.app)
		require.Equal(t, c.want, strings.ReplaceAll(err.Error(), dir, "DIR"))
		var ce *Error
		require.True(t, errors.As(err, &ce))
	}
}

func TestCheckPathWithoutWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	require.NoError(t, os.Remove(dir))
	err := Check(&spec.App{Script: "x.js"})
	require.Error(t, err)
}

func TestSuggest(t *testing.T) {
	ks := keys()
	for in, want := range map[string]string{
		"instance": "instances", "kill-timeout": "kill_timeout", "KILL_TIMEOUT": "kill_timeout",
		"restart_dalay": "restart_delay", "zzz": "", "environment": "",
	} {
		require.Equal(t, want, suggest(in, ks), in)
	}
}

func TestIgnoredPM2Keys(t *testing.T) {
	ks := IgnoredPM2Keys()
	require.Contains(t, ks, "out_file")
	require.Contains(t, ks, "merge_logs")
	for _, k := range ks {
		_, isOption := optionByKey(k)
		require.False(t, isOption, "%s is both ignored and a keel option", k)
		require.Nil(t, pm2Keys[k], "%s is both ignored and handled", k)
	}
}
