package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/client"
	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/spec"
)

func (r *runner) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "keel",
		Short: "keel keeps services up",
		Long: "keel runs programs as one or many instances, restarts what crashes, reloads\n" +
			"without dropping requests, captures logs and groups crash reports.",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return &usageError{msg: msg, hint: "Run 'keel --help' for the list of commands."}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if v, _ := cmd.Flags().GetBool("version"); v {
				_, err := fmt.Fprintf(r.stdio.Out, "keel %s\n", r.deps.Version)
				return fail("version", err)
			}
			return cmd.Help()
		},
	}
	// Our own --version rather than cobra's: a custom version template
	// would link text/template, whose reflective method calls stop the
	// linker from dropping unused methods (a third more binary, all of it
	// resident in the daemon).
	root.Flags().BoolP("version", "v", false, "print keel's version")
	root.SetOut(r.stdio.Out)
	root.SetErr(r.stdio.Err)
	root.SetIn(r.stdio.In)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef(cmd, "%s", err)
	})
	root.CompletionOptions.HiddenDefaultCmd = true
	root.SuggestionsMinimumDistance = 2
	root.AddGroup(
		&cobra.Group{ID: "apps", Title: "Apps:"},
		&cobra.Group{ID: "look", Title: "Looking at them:"},
		&cobra.Group{ID: "daemon", Title: "The daemon:"},
	)
	for _, c := range []*cobra.Command{
		r.startCommand(), r.targetCommand("stop", "graceful stop: signal, wait kill_timeout, then SIGKILL the process group", (*client.Client).Stop),
		r.fileTargetCommand("restart", "stop then start", api.ApplyRestart, (*client.Client).Restart, "startOrRestart"),
		r.fileTargetCommand("reload", "rolling restart without downtime: per instance, start new → wait ready → stop old", api.ApplyReload, (*client.Client).Reload, "startOrReload", "startOrGracefulReload"),
		r.diffCommand(),
		r.scaleCommand(), r.targetCommand("delete", "stop and forget", (*client.Client).Delete),
		r.runCommand(), r.exportCommand(),
	} {
		c.GroupID = "apps"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		r.listCommand(), r.describeCommand(), r.logsCommand(), r.crashesCommand(), r.crashCommand(), r.monitCommand(), r.webCommand(),
	} {
		c.GroupID = "look"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		r.plainCommand("save", "persist the running set to dump.json", (*client.Client).Save),
		r.plainCommand("resurrect", "restore the running set from dump.json", (*client.Client).Resurrect),
		r.startupCommand(), r.daemonCommand(), r.killCommand(), r.versionCommand(),
	} {
		c.GroupID = "daemon"
		root.AddCommand(c)
	}
	return root
}

// command is a cobra.Command with keel's argument checking.
func command(use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args, RunE: run, DisableFlagsInUseLine: true}
}

// exactArgs wants exactly the named arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usagef(cmd, "%s: missing <%s>", cmd.Name(), names[len(args)])
		case len(args) > len(names):
			return usagef(cmd, "%s: unexpected argument %q", cmd.Name(), args[len(names)])
		}
		return nil
	}
}

// maxArgs wants at most the named arguments.
func maxArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > len(names) {
			return usagef(cmd, "%s: unexpected argument %q", cmd.Name(), args[len(names)])
		}
		return nil
	}
}

// parseTarget reads a target argument; a bad one is a usage error.
func parseTarget(cmd *cobra.Command, s string) (spec.Target, error) {
	t, err := spec.ParseTarget(s)
	if err != nil {
		return t, usagef(cmd, "%s: %v", cmd.Name(), err)
	}
	return t, nil
}

// jsonFlag adds --json to cmd.
func jsonFlag(cmd *cobra.Command) *bool {
	return cmd.Flags().Bool("json", false, "print JSON only")
}

func (r *runner) targetCommand(name, short string, call func(*client.Client, context.Context, spec.Target) (api.Result, error)) *cobra.Command {
	var asJSON *bool
	cmd := command(name+" <target>", short, exactArgs("target"), func(cmd *cobra.Command, args []string) error {
		t, err := parseTarget(cmd, args[0])
		if err != nil {
			return err
		}
		what := name + " " + t.String()
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(what, err)
		}
		res, err := call(c, cmd.Context(), t)
		if err != nil {
			return fail(what, err)
		}
		return fail(what, r.printResult(res, *asJSON))
	})
	cmd.Long = short + ".\n\n<target> is an app name, name:N for one instance, or all."
	asJSON = jsonFlag(cmd)
	return cmd
}

// fileTargetCommand is a targetCommand that also applies a config file:
// `keel reload keel.yaml` makes the running apps match it (mode says how
// changed apps are replaced).
func (r *runner) fileTargetCommand(name, short, mode string, call func(*client.Client, context.Context, spec.Target) (api.Result, error), aliases ...string) *cobra.Command {
	cmd := r.targetCommand(name, short, call)
	cmd.Use = name + " <target|config>"
	cmd.Aliases = aliases
	cmd.Long = short + ".\n\n<target> is an app name, name:N for one instance, or all.\n\n" +
		"A config file (keel.yaml/.yml/.json/.toml, ecosystem.config.js) is applied instead:\n" +
		"apps not running are started, unchanged ones left alone, a changed instance count\n" +
		"scaled, any other change replaces the app's processes (" + map[string]string{
		api.ApplyReload:  "rolling and ready-gated;\na failure rolls the replaced instances back and exits 1",
		api.ApplyRestart: "stop then start",
	}[mode] + ").\n\n" + envRule
	cmd.Example = fmt.Sprintf("  keel %s web\n  keel %s keel.yaml --env production\n  keel %s ecosystem.config.js --only api --json", name, name, name)
	f := addApplyFlags(cmd, nil, new(bool), mode == api.ApplyReload)
	byTarget := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !config.IsConfigFile(args[0]) {
			if given := changed(cmd.Flags(), "json"); len(given) > 0 {
				return usagef(cmd, "%s: %s apply to a config file, and %s is not one", name, strings.Join(given, ", "), args[0])
			}
			return byTarget(cmd, args)
		}
		asJSON, _ := cmd.Flags().GetBool("json")
		f.asJSON = &asJSON
		return r.applyFile(cmd, args[0], mode, f, *f.dryRun)
	}
	return cmd
}

func (r *runner) plainCommand(name, short string, call func(*client.Client, context.Context) (api.Result, error)) *cobra.Command {
	var asJSON *bool
	cmd := command(name, short, exactArgs(), func(cmd *cobra.Command, args []string) error {
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(name, err)
		}
		res, err := call(c, cmd.Context())
		if err != nil {
			return fail(name, err)
		}
		return fail(name, r.printResult(res, *asJSON))
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

func (r *runner) scaleCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("scale <app> <N>", "change an app's instance count live", exactArgs("app", "N"), func(cmd *cobra.Command, args []string) error {
		app := args[0]
		if !spec.ValidName(app) {
			return usagef(cmd, "scale: %q is not an app name", app)
		}
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 0 {
			return usagef(cmd, "scale: instance count %q is not a number ≥ 0", args[1])
		}
		what := fmt.Sprintf("scale %s to %d", app, n)
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(what, err)
		}
		res, err := c.Scale(cmd.Context(), app, n)
		if err != nil {
			return fail(what, err)
		}
		return fail(what, r.printResult(res, *asJSON))
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

func (r *runner) listCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("ls", "table of instances", exactArgs(), func(cmd *cobra.Command, args []string) error {
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail("ls", err)
		}
		l, err := c.List(cmd.Context())
		if err != nil {
			return fail("ls", err)
		}
		if *asJSON {
			return fail("ls", writeJSON(r.stdio.Out, l))
		}
		if len(l) == 0 {
			fmt.Fprintln(r.stdio.Out, "no apps yet: start one with 'keel start <script|binary|config>'")
			return nil
		}
		return fail("ls", writeInstances(r.stdio.Out, l, time.Now()))
	})
	cmd.Aliases = []string{"list", "status"}
	asJSON = jsonFlag(cmd)
	return cmd
}

func (r *runner) describeCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("describe <target>", "everything known about an app", exactArgs("target"), func(cmd *cobra.Command, args []string) error {
		t, err := parseTarget(cmd, args[0])
		if err != nil {
			return err
		}
		what := "describe " + t.String()
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(what, err)
		}
		d, err := c.Describe(cmd.Context(), t)
		if err != nil {
			return fail(what, err)
		}
		if *asJSON {
			return fail(what, writeJSON(r.stdio.Out, d))
		}
		home, _ := r.home()
		return fail(what, writeDetails(r.stdio.Out, d, home, time.Now()))
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

func (r *runner) crashesCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("crashes [app]", "crash groups, newest first", maxArgs("app"), func(cmd *cobra.Command, args []string) error {
		app, what := "", "crashes"
		if len(args) == 1 {
			app = args[0]
			if !spec.ValidName(app) {
				return usagef(cmd, "crashes: %q is not an app name", app)
			}
			what += " " + app
		}
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(what, err)
		}
		g, err := c.Crashes(cmd.Context(), app)
		if err != nil {
			return fail(what, err)
		}
		if *asJSON {
			return fail(what, writeJSON(r.stdio.Out, g))
		}
		if len(g) == 0 {
			fmt.Fprintln(r.stdio.Out, "no crashes recorded")
			return nil
		}
		return fail(what, writeCrashes(r.stdio.Out, g, time.Now()))
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

func (r *runner) crashCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("crash <id>", "one crash group with its latest stack", exactArgs("id"), func(cmd *cobra.Command, args []string) error {
		what := "crash " + args[0]
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail(what, err)
		}
		d, err := c.Crash(cmd.Context(), args[0])
		if err != nil {
			return fail(what, err)
		}
		if *asJSON {
			return fail(what, writeJSON(r.stdio.Out, d))
		}
		return fail(what, writeCrash(r.stdio.Out, d, time.Now()))
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

func (r *runner) daemonCommand() *cobra.Command {
	return command("daemon", "run the daemon in the foreground", exactArgs(), func(cmd *cobra.Command, args []string) error {
		if r.deps.RunDaemon == nil {
			return fail("daemon", errors.New("this build of keel has no daemon"))
		}
		home, err := r.home()
		if err != nil {
			return fail("daemon", err)
		}
		if err := os.MkdirAll(home, 0o700); err != nil {
			return fail("daemon", fmt.Errorf("creating KEEL_HOME: %w", err))
		}
		return fail("daemon", r.deps.RunDaemon(cmd.Context(), home))
	})
}

func (r *runner) killCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("kill", "stop every app, then the daemon", exactArgs(), func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		c, err := r.client()
		if err != nil {
			return fail("kill", err)
		}
		v, err := c.Version(ctx)
		if errors.Is(err, client.ErrNoDaemon) {
			return fail("kill", r.killLeftovers(ctx, *asJSON))
		}
		if err != nil {
			return fail("kill", err)
		}
		res, err := c.Kill(ctx)
		if err != nil {
			return fail("kill", err)
		}
		if err := waitGone(ctx, v.Pid, 30*time.Second); err != nil {
			return fail("kill", err)
		}
		return fail("kill", r.printResult(res, *asJSON))
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

// killLeftovers is kill with no daemon: the instances a dead daemon's
// keepers still run are stopped all the same.
func (r *runner) killLeftovers(ctx context.Context, asJSON bool) error {
	msg := "no daemon is running"
	if r.deps.StopLeftovers != nil {
		home, err := r.home()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		n, err := r.deps.StopLeftovers(ctx, home)
		if n > 0 {
			msg = fmt.Sprintf("no daemon is running; stopped the %d instance(s) its keepers still ran", n)
		}
		if err != nil {
			return fmt.Errorf("stopping what keel's keepers still run: %w", err)
		}
	}
	return r.printResult(api.Result{Message: msg}, asJSON)
}

// waitGone waits until process pid no longer exists, so that the next
// command does not meet a daemon on its way out. A pid that is this
// process's child (a daemon it started) is reaped.
func waitGone(ctx context.Context, pid int, timeout time.Duration) error {
	if pid <= 0 {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid {
			return nil
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("the daemon (pid %d) answered but is still running after %s", pid, timeout)
		case <-tick.C:
		}
	}
}

func (r *runner) versionCommand() *cobra.Command {
	var asJSON *bool
	cmd := command("version", "print keel's version (and the running daemon's)", exactArgs(), func(cmd *cobra.Command, args []string) error {
		out := struct {
			Version string       `json:"version"`
			Daemon  *api.Version `json:"daemon,omitempty"`
		}{Version: r.deps.Version}
		if c, err := r.client(); err == nil {
			if v, err := c.Version(cmd.Context()); err == nil {
				out.Daemon = &v
			}
		}
		if *asJSON {
			return fail("version", writeJSON(r.stdio.Out, out))
		}
		fmt.Fprintf(r.stdio.Out, "keel %s\n", out.Version)
		if d := out.Daemon; d != nil {
			fmt.Fprintf(r.stdio.Out, "daemon %s (pid %d, KEEL_HOME %s)\n", d.Version, d.Pid, d.Home)
		}
		return nil
	})
	asJSON = jsonFlag(cmd)
	return cmd
}

// changed lists the flags set on the command line, for error messages.
func changed(fs *pflag.FlagSet, skip ...string) []string {
	var names []string
	fs.Visit(func(f *pflag.Flag) {
		for _, s := range skip {
			if f.Name == s {
				return
			}
		}
		names = append(names, "--"+f.Name)
	})
	return names
}

// joinQuoted joins words as a shell would need them.
func joinQuoted(words []string) string {
	var b strings.Builder
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			b.WriteString(strconv.Quote(w))
		} else {
			b.WriteString(w)
		}
	}
	return b.String()
}
