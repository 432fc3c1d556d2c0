// Package cli is keel's command line: the commands of SPEC.md, their
// flags, tables and --json output, and exit codes.
//
// Run never exits the process and never touches os.Args, os.Stdout or the
// environment directly: main passes them in, so tests drive the CLI in
// process. Exit codes: 0 success; 1 failure, with exactly one line on
// stderr, "keel: <what failed>: <why>"; 2 usage error (unknown command or
// flag, missing or extra arguments, a bad flag value), with one line saying
// what is wrong and one hint line. A read command given --json prints only
// JSON on stdout.
//
// Every command that needs the daemon starts it when nobody answers (see
// client.EnsureDaemon) and then makes one request. `logs`, `version`,
// `startup`, `run` and `daemon` do not start it.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-run/keel/internal/client"
	"github.com/keel-run/keel/internal/oneline"
	"github.com/keel-run/keel/internal/spec"
)

// Stdio is where a command reads and writes.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// Deps is what the CLI needs from main.
type Deps struct {
	// Exe is the keel binary, used to start the daemon as `Exe daemon` and
	// named in `keel startup`'s unit. Default: os.Executable().
	Exe string
	// Version is keel's version, as `keel version` prints it.
	Version string
	// RunDaemon runs the daemon in the foreground (`keel daemon`) until ctx
	// is done or it is killed.
	RunDaemon func(ctx context.Context, home string) error
	// StopLeftovers stops, when no daemon runs, the instances that keepers
	// in home still run (a daemon that was SIGKILLed leaves them serving)
	// and returns how many there were; `keel kill` calls it. Nil: kill
	// without a daemon does nothing.
	StopLeftovers func(ctx context.Context, home string) (int, error)
	// RunForeground runs apps without a daemon (`keel run <config>`) until
	// ctx is done.
	RunForeground func(ctx context.Context, home string, apps []*spec.App, o RunOptions) error
	// Getenv reads the environment (KEEL_HOME, HOME). Default: os.Getenv.
	Getenv func(string) string
	// Environ is the whole environment, which `keel start` hands to the
	// apps it defines. Default: os.Environ.
	Environ func() []string
}

// RunOptions are `keel run`'s own flags.
type RunOptions struct {
	// Health is the address of the /livez, /readyz and /startupz
	// endpoints ("" for none): --health, else KEEL_HEALTH.
	Health string
	// LogFormat is how the apps' lines are echoed on stdout: "text" or
	// "json".
	LogFormat string
	// LogFiles: write the apps' log files in KEEL_HOME (--log-files).
	LogFiles bool
}

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Run runs one keel command line; args excludes the program name. It
// returns the process's exit code.
func Run(ctx context.Context, args []string, stdio Stdio, deps Deps) int {
	if deps.Getenv == nil {
		deps.Getenv = os.Getenv
	}
	if deps.Environ == nil {
		deps.Environ = os.Environ
	}
	if stdio.In == nil {
		stdio.In = strings.NewReader("")
	}
	r := &runner{stdio: stdio, deps: deps}
	defer r.close()
	root := r.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return r.report(err)
}

// runner holds what the commands of one Run share.
type runner struct {
	stdio Stdio
	deps  Deps
	c     *client.Client
}

func (r *runner) close() {
	if r.c != nil {
		r.c.Close()
	}
}

// home is KEEL_HOME.
func (r *runner) home() (string, error) { return client.Home(r.deps.Getenv) }

func (r *runner) exe() (string, error) {
	if r.deps.Exe != "" {
		return r.deps.Exe, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the keel binary: %w", err)
	}
	return exe, nil
}

// daemon returns a client of a daemon that answers, starting it if needed.
func (r *runner) daemon(ctx context.Context) (*client.Client, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	exe, err := r.exe()
	if err != nil {
		return nil, err
	}
	if err := c.EnsureDaemon(ctx, exe); err != nil {
		return nil, err
	}
	return c, nil
}

// client returns a client without starting the daemon.
func (r *runner) client() (*client.Client, error) {
	if r.c != nil {
		return r.c, nil
	}
	home, err := r.home()
	if err != nil {
		return nil, err
	}
	r.c = client.New(home)
	return r.c, nil
}

// usageError is a command line keel cannot make sense of: exit 2.
type usageError struct {
	msg  string
	hint string
}

func (e *usageError) Error() string { return e.msg }

// usagef returns a usage error for cmd, hinting at its help.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{
		msg:  fmt.Sprintf(format, args...),
		hint: fmt.Sprintf("Run '%s --help' for usage.", cmd.CommandPath()),
	}
}

// failure is a command that did not succeed: exit 1.
type failure struct {
	what string
	err  error
}

func (e *failure) Error() string { return e.what + ": " + e.err.Error() }
func (e *failure) Unwrap() error { return e.err }

// fail wraps err as the failure of what ("stop web", "ls"); nil stays nil.
func fail(what string, err error) error {
	if err == nil {
		return nil
	}
	return &failure{what: what, err: err}
}

// report prints err as SPEC.md wants and returns the exit code.
func (r *runner) report(err error) int {
	if err == nil {
		return ExitOK
	}
	var se *silentExit
	if errors.As(err, &se) {
		return se.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(r.stdio.Err, "keel: %s\n", oneline.Fold(ue.msg, 0))
		if ue.hint != "" {
			fmt.Fprintln(r.stdio.Err, ue.hint)
		}
		return ExitUsage
	}
	var f *failure
	if errors.As(err, &f) {
		fmt.Fprintf(r.stdio.Err, "keel: %s: %s\n", f.what, why(f.err))
		return ExitFailure
	}
	fmt.Fprintf(r.stdio.Err, "keel: %s\n", why(err))
	return ExitFailure
}

// why is the reason part of a failure line.
func why(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	}
	return oneline.Fold(strings.TrimPrefix(err.Error(), "keel: "), 0)
}
