package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/spec"
)

// optionValue is a start flag made from a config.Option: it keeps the
// text given, to be applied with config.Set once parsing is done, so that
// flags and config keys share one parser.
type optionValue struct {
	kind   config.Kind
	values []string
}

func (v *optionValue) String() string { return strings.Join(v.values, ",") }

func (v *optionValue) Set(s string) error {
	if v.kind == config.List || v.kind == config.Env {
		v.values = append(v.values, s)
	} else {
		v.values = []string{s}
	}
	return nil
}

func (v *optionValue) Type() string {
	switch v.kind {
	case config.Bool:
		return "bool"
	case config.Int:
		return "int"
	case config.Env:
		return "KEY=VALUE"
	case config.List:
		return "value"
	}
	return v.kind.String()
}

// optionFlags adds one flag per config.Option to cmd and returns a
// function that applies the flags given to an app, in the option table's
// order.
func optionFlags(cmd *cobra.Command) (apply func(*spec.App) error, given func() []string) {
	opts := config.Options()
	values := make([]*optionValue, len(opts))
	for i, o := range opts {
		values[i] = &optionValue{kind: o.Kind}
		f := cmd.Flags().VarPF(values[i], o.Flag, o.Short, o.Usage)
		if o.Kind == config.Bool {
			f.NoOptDefVal = "true"
		}
	}
	apply = func(app *spec.App) error {
		for i, o := range opts {
			for _, s := range values[i].values {
				if err := config.Set(app, o.Key, s); err != nil {
					return err
				}
			}
		}
		return nil
	}
	given = func() []string {
		var names []string
		for i, o := range opts {
			if len(values[i].values) > 0 {
				names = append(names, "--"+o.Flag)
			}
		}
		return names
	}
	return apply, given
}

// onlyApps keeps the apps named in only (all of them when only is empty);
// naming an app the file does not have is an error.
func onlyApps(apps []*spec.App, only []string, file string) ([]*spec.App, error) {
	if len(only) == 0 {
		return apps, nil
	}
	var names []string
	for _, o := range only {
		for _, n := range strings.Split(o, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
	}
	var kept []*spec.App
	for _, n := range names {
		i := slices.IndexFunc(apps, func(a *spec.App) bool { return a.Name == n })
		if i < 0 {
			var have []string
			for _, a := range apps {
				have = append(have, a.Name)
			}
			return nil, fmt.Errorf("--only: %s has no app %q (it has %s)", file, n, strings.Join(have, ", "))
		}
		if !slices.Contains(kept, apps[i]) {
			kept = append(kept, apps[i])
		}
	}
	return kept, nil
}

func (r *runner) startCommand() *cobra.Command {
	var (
		asJSON *bool
		only   *[]string
	)
	cmd := command("start <script|binary|config> [flags] [-- args…]",
		"define and start apps; a config file starts every app in it", nil, nil)
	cmd.Long = "Define an app and start it: a script (.js/.mjs/.cjs run with node, .py with python3),\n" +
		"a binary, or a command on PATH; everything after -- is passed to it.\n" +
		"A config file (keel.yaml/.yml/.json/.toml, ecosystem.config.js) starts every app in it;\n" +
		"its options are set in the file, not by flags. It is applied: apps not running start,\n" +
		"unchanged ones are left alone, a changed instance count is scaled, and any other change\n" +
		"replaces the app's processes (stop then start; keel reload FILE replaces them rolling).\n" +
		"--env NAME applies each app's env_NAME block; --prune deletes apps the file does not name.\n\n" + envRule
	cmd.Example = "  keel start server.js -i 4 --listen :3000\n" +
		"  keel start ./api --name api --env PORT=8080 -- --verbose\n" +
		"  keel start keel.yaml --only web,worker\n" +
		"  keel start ecosystem.config.js --env production"
	apply, given := optionFlags(cmd)
	asJSON = jsonFlag(cmd)
	only = cmd.Flags().StringSlice("only", nil, "with a config file: start only these apps (comma-separated or repeated)")
	prune := cmd.Flags().Bool("prune", false, "with a config file: delete the apps it does not name")

	cmd.Args = func(cmd *cobra.Command, args []string) error {
		before := args
		if dash := cmd.ArgsLenAtDash(); dash >= 0 {
			before = args[:dash]
		}
		switch {
		case len(before) == 0 && !cmd.Flags().Changed("script"):
			return usagef(cmd, "start: missing <script|binary|config>")
		case len(before) > 1:
			return usagef(cmd, "start: unexpected argument %q (arguments for the app go after --)", before[1])
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var appArgs []string
		if dash := cmd.ArgsLenAtDash(); dash >= 0 {
			args, appArgs = args[:dash], args[dash:]
		}
		var target string
		if len(args) == 1 {
			target = args[0]
		}

		var apps []*spec.App
		if target != "" && config.IsConfigFile(target) {
			if g := slices.DeleteFunc(given(), func(f string) bool { return f == "--env" }); len(g) > 0 {
				return usagef(cmd, "start: %s cannot be combined with a config file; set it in %s", strings.Join(g, ", "), target)
			}
			if len(appArgs) > 0 {
				return usagef(cmd, "start: arguments after -- cannot be combined with a config file; set args in %s", target)
			}
			// With a config file, --env names its env_<name> blocks.
			var envName string
			if v, ok := cmd.Flags().Lookup("env").Value.(*optionValue); ok && len(v.values) > 0 {
				if len(v.values) > 1 || strings.Contains(v.values[0], "=") {
					return usagef(cmd, "start: with a config file, --env names one env_NAME block (--env production), not KEY=VALUE")
				}
				envName = v.values[0]
			}
			return r.applyFile(cmd, target, api.ApplyStart, applyFlags{env: &envName, only: only, prune: prune, dryRun: new(bool), asJSON: asJSON}, false)
		} else {
			if len(*only) > 0 {
				return usagef(cmd, "start: --only applies to a config file, and %s is not one", target)
			}
			app := &spec.App{}
			if err := apply(app); err != nil {
				return usagef(cmd, "start: %v", err)
			}
			if target != "" {
				if cmd.Flags().Changed("script") {
					return usagef(cmd, "start: give the script either as an argument or with --script, not both")
				}
				app.Script = target
			}
			app.Args = append(app.Args, appArgs...)
			what := "start " + app.Script
			if err := config.Check(app); err != nil {
				var ce *config.Error
				if errors.As(err, &ce) && !slices.Contains([]string{"script", "--cwd", "--interpreter"}, ce.Key) {
					return usagef(cmd, "start: %v", err)
				}
				return fail(what, err)
			}
			apps = []*spec.App{app}
		}

		var names []string
		env := r.deps.Environ()
		for _, a := range apps {
			names = append(names, a.Name)
			a.ShellEnv = env
		}
		what := "start " + strings.Join(names, ", ")
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(what, err)
		}
		res, err := c.Start(cmd.Context(), apps)
		if err != nil {
			return fail(what, err)
		}
		return fail(what, r.printResult(res, *asJSON))
	}
	return cmd
}

func (r *runner) runCommand() *cobra.Command {
	var (
		only *[]string
		ro   RunOptions
	)
	cmd := command("run <config>", "run a config's apps in the foreground, without a daemon (for containers)", exactArgs("config"), func(cmd *cobra.Command, args []string) error {
		path := args[0]
		what := "run " + path
		if !config.IsConfigFile(path) {
			return usagef(cmd, "run: %s is not a config file (keel.yaml/.yml/.json/.toml or ecosystem.config.js)", path)
		}
		if r.deps.RunForeground == nil {
			return fail(what, errors.New("this build of keel cannot run apps in the foreground"))
		}
		home, err := r.home()
		if err != nil {
			return fail(what, err)
		}
		loaded, err := config.Load(path)
		if err != nil {
			return fail("run", err) // the error names the file
		}
		apps, err := onlyApps(loaded, *only, path)
		if err != nil {
			return usagef(cmd, "run: %v", err)
		}
		if !cmd.Flags().Changed("health") {
			ro.Health = r.deps.Getenv("KEEL_HEALTH")
		}
		if ro.LogFormat != "text" && ro.LogFormat != "json" {
			return usagef(cmd, "run: --log-format %q: want text or json", ro.LogFormat)
		}
		return fail(what, r.deps.RunForeground(cmd.Context(), home, apps, ro))
	})
	cmd.Long = "Run every app of a config file in the foreground, without a daemon: for containers.\n" +
		"PID-1 safe: reaps zombies and forwards signals. On SIGTERM /readyz turns 503 at once and\n" +
		"every app drains and stops in parallel. Exits 0 when every app stopped within its\n" +
		"kill_timeout, 1 when an app was errored or had to be killed (it logs which).\n" +
		"keel stop, reload, scale, ls and logs with the same KEEL_HOME act on its apps."
	only = cmd.Flags().StringSlice("only", nil, "run only these apps (comma-separated or repeated)")
	cmd.Flags().StringVar(&ro.Health, "health", "", "answer /livez, /readyz and /startupz on this address, e.g. :9616 (default: $KEEL_HEALTH)")
	cmd.Flags().StringVar(&ro.LogFormat, "log-format", "text", `how the apps' lines are echoed on stdout: text, or json ({"time","app","instance","stream","line"} a line)`)
	cmd.Flags().BoolVar(&ro.LogFiles, "log-files", true, "also write the apps' log files in KEEL_HOME (--log-files=false: stdout is the log)")
	return cmd
}
