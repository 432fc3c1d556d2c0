package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/spec"
)

func (r *runner) logsCommand() *cobra.Command {
	var opts logs.PrintOptions
	cmd := command("logs [target]", "print the last lines of each instance's logs, or follow them", maxArgs("target"), func(cmd *cobra.Command, args []string) error {
		opts.Target = spec.All
		what := "logs"
		if len(args) == 1 {
			t, err := parseTarget(cmd, args[0])
			if err != nil {
				return err
			}
			opts.Target = t
			what += " " + t.String()
		}
		if opts.Raw && opts.JSON {
			return usagef(cmd, "logs: --raw and --json exclude each other")
		}
		if opts.Lines < 0 {
			return usagef(cmd, "logs: --lines %d: want a number ≥ 0", opts.Lines)
		}
		home, err := r.home()
		if err != nil {
			return fail(what, err)
		}
		opts.Home = home
		err = logs.Print(cmd.Context(), r.stdio.Out, opts)
		if opts.Follow && errors.Is(err, context.Canceled) {
			return nil // Ctrl-C is how following ends
		}
		return fail(what, err)
	})
	cmd.Long = "Print the last --lines lines of each instance's stdout and stderr, merged by time,\n" +
		"then exit; or keep printing new lines with --follow. <target> is an app name,\n" +
		"name:N or all (the default). Reads the log files directly; no daemon needed."
	f := cmd.Flags()
	f.IntVarP(&opts.Lines, "lines", "n", logs.DefaultLines, "lines per instance")
	f.BoolVarP(&opts.Follow, "follow", "f", false, "keep printing new lines until interrupted")
	f.BoolVar(&opts.ErrOnly, "err", false, "stderr only")
	f.BoolVar(&opts.Raw, "raw", false, "exactly what the app wrote, nothing added")
	f.BoolVar(&opts.JSON, "json", false, `one JSON object a line: {"app","instance","stream","time","line"}`)
	return cmd
}

func (r *runner) startupCommand() *cobra.Command {
	return command("startup", "print a systemd unit that runs the daemon at boot", exactArgs(), func(cmd *cobra.Command, args []string) error {
		exe, err := r.exe()
		if err == nil {
			exe, err = filepath.Abs(exe)
		}
		if err != nil {
			return fail("startup", err)
		}
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		home, err := r.home()
		if err != nil {
			return fail("startup", err)
		}
		name := r.deps.Getenv("USER")
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		if name == "" {
			name = fmt.Sprint(os.Getuid())
		}
		_, err = fmt.Fprint(r.stdio.Out, systemdUnit(exe, home, name))
		return fail("startup", err)
	})
}

// systemdUnit is a system unit that runs `exe daemon` as user at boot.
// KillMode=process: stopping or restarting the unit ends the daemon only;
// the apps run under their own keepers and keep serving, and the next
// daemon adopts them.
func systemdUnit(exe, home, username string) string {
	unit := "keel-" + username + ".service"
	q := func(s string) string {
		if strings.ContainsAny(s, " \t\"'\\%$") {
			return fmt.Sprintf("%q", strings.ReplaceAll(s, "%", "%%"))
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# keel: runs the keel daemon of %s at boot.\n", username)
	fmt.Fprintf(&b, "# Install it as root:\n")
	fmt.Fprintf(&b, "#   keel startup | sudo tee /etc/systemd/system/%s\n", unit)
	fmt.Fprintf(&b, "#   sudo systemctl daemon-reload && sudo systemctl enable --now %s\n", unit)
	b.WriteString("[Unit]\n")
	fmt.Fprintf(&b, "Description=keel process manager for %s\n", username)
	b.WriteString("Documentation=https://github.com/keel-run/keel\n")
	b.WriteString("After=network.target\n")
	b.WriteString("StartLimitIntervalSec=0\n")
	b.WriteString("\n[Service]\n")
	b.WriteString("Type=simple\n")
	fmt.Fprintf(&b, "User=%s\n", username)
	fmt.Fprintf(&b, "Environment=KEEL_HOME=%s\n", q(home))
	fmt.Fprintf(&b, "ExecStart=%s daemon\n", q(exe))
	b.WriteString("Restart=always\n")
	b.WriteString("RestartSec=1\n")
	b.WriteString("KillMode=process\n")
	// A cgroup subtree of its own that keel may write to, a cgroup per
	// instance in it (see describe's containment line); the daemon starts
	// in its leaf "daemon", so the subtree may hand the memory controller
	// on (systemd 254; older ones ignore the key, and keel moves itself).
	b.WriteString("Delegate=yes\n")
	b.WriteString("DelegateSubgroup=daemon\n")
	b.WriteString("LimitNOFILE=infinity\n")
	b.WriteString("\n[Install]\n")
	b.WriteString("WantedBy=multi-user.target\n")
	return b.String()
}
