// Command keel is a process manager: run `keel help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/keel-run/keel/internal/cli"
	"github.com/keel-run/keel/internal/daemon"
	"github.com/keel-run/keel/internal/keeper"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/procs"
	"github.com/keel-run/keel/internal/reaper"
	"github.com/keel-run/keel/internal/spec"
)

const version = "0.1.0"

func main() {
	// keel re-executes itself as a process's keeper, and as the pre-exec
	// step that sets LISTEN_PID; neither is a user command.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "__keeper":
			os.Exit(keeper.MainWith(os.Args[2:], keeper.Options{NodeIPC: keeper.OpenNodeChannel}))
		case "__exec":
			os.Exit(proc.ExecMain(os.Args[2:]))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "keel: finding my own binary: %v\n", err)
		os.Exit(1)
	}
	// The daemon and keel run re-execute their own image through
	// /proc/self/exe, which works even when the file was replaced or
	// removed (an upgrade, or `go run`'s temporary binary).
	self := exe
	if _, err := os.Stat(procs.SelfExe); err == nil {
		self = procs.SelfExe
	}
	code := cli.Run(ctx, os.Args[1:], cli.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, cli.Deps{
		Exe:           exe,
		Version:       version,
		Getenv:        os.Getenv,
		StopLeftovers: keeper.StopAll,
		RunDaemon: func(ctx context.Context, home string) error {
			procs.Limit(daemon.Procs)
			err := daemon.Run(ctx, daemon.Options{Home: home, Exe: self, Version: version, Cgroup: os.Getenv("KEEL_CGROUP")})
			if errors.Is(err, daemon.ErrAlreadyRunning) {
				// Lost a start race to another daemon: that one serves.
				return nil
			}
			return err
		},
		RunForeground: func(ctx context.Context, home string, apps []*spec.App, ro cli.RunOptions) error {
			procs.Limit(daemon.Procs)
			if err := reaper.BecomeSubreaper(); err != nil {
				return err
			}
			children := reaper.New()
			sigchld := make(chan os.Signal, 16)
			signal.Notify(sigchld, syscall.SIGCHLD)
			reapCtx, stopReaping := context.WithCancel(context.Background())
			reaped := make(chan struct{})
			go func() { defer close(reaped); children.Run(reapCtx, sigchld, nil) }()
			defer func() { stopReaping(); <-reaped; signal.Stop(sigchld) }()
			return daemon.Run(ctx, daemon.Options{Home: home, Exe: self, Version: version, Foreground: true, Apps: apps, Echo: os.Stdout,
				Health: ro.Health, LogFormat: ro.LogFormat, LogFiles: ro.LogFiles, StartChild: children.Start,
				Cgroup: os.Getenv("KEEL_CGROUP")})
		},
	})
	stop()
	os.Exit(code)
}
