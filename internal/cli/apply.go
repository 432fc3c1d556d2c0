package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/spec"
)

// applyFlags are the flags of a command that applies a config file.
type applyFlags struct {
	env    *string
	only   *[]string
	prune  *bool
	dryRun *bool
	asJSON *bool
}

// addApplyFlags adds the config-file flags to cmd; only and asJSON may be
// given when cmd already has them.
func addApplyFlags(cmd *cobra.Command, only *[]string, asJSON *bool, dryRun bool) applyFlags {
	f := applyFlags{only: only, asJSON: asJSON}
	f.env = cmd.Flags().String("env", "", "with a config file: apply each app's env_NAME block after its env")
	f.prune = cmd.Flags().Bool("prune", false, "with a config file: delete the apps it does not name")
	if only == nil {
		f.only = cmd.Flags().StringSlice("only", nil, "with a config file: apply only these apps (comma-separated or repeated)")
	}
	if asJSON == nil {
		f.asJSON = jsonFlag(cmd)
	}
	if dryRun {
		f.dryRun = cmd.Flags().Bool("dry-run", false, "with a config file: print the plan and change nothing (as keel diff)")
	} else {
		f.dryRun = new(bool)
	}
	return f
}

// envRule is the environment rule, for help texts.
const envRule = "An app's environment is the environment of the keel command that applies\n" +
	"the file, then the app's env, then its env_NAME block with --env NAME: each\n" +
	"later one wins, and a variable removed from the file is gone once the app\n" +
	"is replaced. A new daemon, save/resurrect and restarts keep that environment."

// applyFile makes the running apps match the config file at path: mode is
// api.ApplyStart, ApplyRestart or ApplyReload. A dry run prints the plan
// and fails with errChanges when anything would change.
func (r *runner) applyFile(cmd *cobra.Command, path, mode string, f applyFlags, dryRun bool) error {
	verb := cmd.Name()
	if len(*f.only) > 0 && *f.prune {
		return usagef(cmd, "%s: --prune deletes the apps a file does not name, so it cannot be combined with --only", verb)
	}
	loaded, err := config.LoadWith(path, config.LoadOptions{Env: *f.env})
	if err != nil {
		return fail(verb, err) // the error names the file
	}
	apps, err := onlyApps(loaded, *f.only, path)
	if err != nil {
		return usagef(cmd, "%s: %v", verb, err)
	}
	env := r.deps.Environ()
	for _, a := range apps {
		a.ShellEnv = env
	}
	what := verb + " " + path
	c, err := r.daemon(cmd.Context())
	if err != nil {
		return fail(what, err)
	}
	res, err := c.Apply(cmd.Context(), api.ApplyRequest{Apps: apps, Mode: mode, Prune: *f.prune, DryRun: dryRun})
	if err != nil {
		return fail(what, err)
	}
	if *f.asJSON {
		if err := writeJSON(r.stdio.Out, res); err != nil {
			return fail(what, err)
		}
	} else {
		writeApply(r.stdio.Out, res, dryRun)
	}
	switch {
	case res.Error != "":
		return fail(what, errors.New(res.Error))
	case dryRun && planChanges(res):
		return errChanges
	}
	return nil
}

// errChanges is a dry run's exit 1 when something would change, with no
// message: the plan was the output.
var errChanges = &silentExit{code: ExitFailure}

// silentExit ends a command with code and prints nothing more.
type silentExit struct{ code int }

func (e *silentExit) Error() string { return fmt.Sprintf("exit %d", e.code) }

// planChanges reports whether a plan changes anything.
func planChanges(res api.ApplyResult) bool {
	for _, a := range res.Apps {
		if a.Action != "unchanged" {
			return true
		}
	}
	return false
}

// writeApply prints one line per app: what happened, or with dryRun what
// would, and the changes behind it; then a failed rollout's log lines.
func writeApply(w io.Writer, res api.ApplyResult, dryRun bool) {
	for _, a := range res.Apps {
		fmt.Fprintln(w, applyLine(a, dryRun))
		if dryRun {
			for _, c := range a.Changes {
				fmt.Fprintf(w, "  %s\n", c)
			}
		}
		if a.Error != "" {
			fmt.Fprintf(w, "  %s\n", a.Error)
		}
		if len(a.Logs) > 0 {
			fmt.Fprintf(w, "  last lines of %s:%d:\n", a.App, *a.FailedInstance)
			for _, l := range a.Logs {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
}

// applyLine is `hello: reloaded (env GREETING changed; 2 instances)`,
// `web: scaled 2 → 4`, `api: unchanged`; in a plan, the action to come.
func applyLine(a api.AppChange, dryRun bool) string {
	what := a.Done
	if dryRun || what == "" {
		what = map[string]string{
			"start": "would start", "unchanged": "unchanged", "scale": "would scale",
			"replace": "would be replaced", "delete": "would be deleted",
		}[a.Action]
	}
	var detail []string
	switch {
	case a.Action == "scale":
		what += fmt.Sprintf(" %d → %d", a.From, a.To)
	case a.Action == "replace":
		if !dryRun {
			var keys []string
			for _, c := range a.Changes {
				keys = append(keys, changeName(c))
			}
			detail = append(detail, strings.Join(keys, ", ")+" changed")
		}
		if a.From != a.To {
			detail = append(detail, fmt.Sprintf("%d → %d instances", a.From, a.To))
		} else {
			detail = append(detail, count(a.To, "instance"))
		}
	case a.Action == "start":
		detail = append(detail, count(a.To, "instance"))
	}
	line := a.App + ": " + what
	if len(detail) > 0 {
		line += " (" + strings.Join(detail, "; ") + ")"
	}
	return line
}

// changeName names a change in a summary: `env GREETING`, `script`.
func changeName(c spec.Change) string {
	if c.Secret {
		return "env " + strings.TrimPrefix(c.Key, "env.")
	}
	return c.Key
}

// count is "1 instance", "2 instances".
func count(n int, noun string) string { return fmt.Sprintf("%d %s%s", n, noun, plural(n)) }

func (r *runner) diffCommand() *cobra.Command {
	var f applyFlags
	cmd := command("diff <config>", "print what applying a config file would change, and change nothing", exactArgs("config"), func(cmd *cobra.Command, args []string) error {
		if !config.IsConfigFile(args[0]) {
			return usagef(cmd, "diff: %s is not a config file (keel.yaml/.yml/.json/.toml or ecosystem.config.js)", args[0])
		}
		return r.applyFile(cmd, args[0], api.ApplyReload, f, true)
	})
	cmd.Long = "Print, app by app, what `keel reload <config>` would do and each key that differs,\n" +
		"old → new; for env only the names of the variables, never their values.\n" +
		"Exits 0 when nothing would change and 1 when something would, as diff does."
	f = addApplyFlags(cmd, nil, nil, false)
	return cmd
}
