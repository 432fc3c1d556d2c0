// Package controltest provides a recording fake control.Backend, a helper
// that serves it on a KEEL_HOME's control socket for a test, and a fake
// daemon for tests that start one as a child process (the test binary run
// as `daemon`).
package controltest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/control"
	"github.com/keel-run/keel/internal/spec"
)

// Backend is a fake control.Backend. It records every call as one line
// ("Stop web:1", "Start web,api", "Scale web 3") and answers from its
// fields. Set the fields before serving; they are read under the lock.
type Backend struct {
	mu sync.Mutex
	// calls made so far
	calls []string
	// Started holds the apps of every Start call.
	started []*spec.App

	// Errs makes the named method ("Stop", "List", …) fail.
	Errs map[string]error
	// Instances is List's answer and every command's Result.Instances.
	Instances []api.Instance
	// Details is Describe's answer.
	Details []api.AppDetail
	// Groups is Crashes' answer.
	Groups []api.CrashGroup
	// Detail is Crash's answer for Detail.ID; other ids are not found.
	Detail api.CrashDetail
	// OnKill runs inside Kill, before it answers.
	OnKill func()
	// Hold, when set, runs inside Stop before it answers, with the
	// request's context: a test can keep a request in flight.
	Hold func(ctx context.Context)
	// Ver is Version's answer.
	Ver api.Version
}

var _ control.Backend = (*Backend)(nil)

// Calls returns the calls made so far, in order.
func (b *Backend) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

// Started returns the apps of every Start call, in order.
func (b *Backend) Started() []*spec.App {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*spec.App(nil), b.started...)
}

func (b *Backend) record(method string, args ...any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	call := method
	for _, a := range args {
		call += " " + fmt.Sprint(a)
	}
	b.calls = append(b.calls, call)
	return b.Errs[method]
}

func (b *Backend) result(msg string) api.Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return api.Result{Message: msg, Instances: b.Instances}
}

// Start records the app names.
func (b *Backend) Start(_ context.Context, apps []*spec.App) (api.Result, error) {
	var names []string
	for _, a := range apps {
		names = append(names, a.Name)
	}
	b.mu.Lock()
	b.started = append(b.started, apps...)
	b.mu.Unlock()
	if err := b.record("Start", strings.Join(names, ",")); err != nil {
		return api.Result{}, err
	}
	return b.result("started " + strings.Join(names, ", ")), nil
}

// Apply records the mode and app names and answers that each started.
func (b *Backend) Apply(_ context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	var names []string
	var res api.ApplyResult
	for _, a := range req.Apps {
		names = append(names, a.Name)
		res.Apps = append(res.Apps, api.AppChange{App: a.Name, Action: "start", Done: "started", To: a.Instances})
	}
	b.mu.Lock()
	b.started = append(b.started, req.Apps...)
	b.mu.Unlock()
	if err := b.record("Apply", req.Mode, strings.Join(names, ",")); err != nil {
		return api.ApplyResult{}, err
	}
	return res, nil
}

func (b *Backend) target(method string, t spec.Target) (api.Result, error) {
	if err := b.record(method, t); err != nil {
		return api.Result{}, err
	}
	return b.result(strings.ToLower(method) + " " + t.String()), nil
}

// Stop records the target, then runs Hold.
func (b *Backend) Stop(ctx context.Context, t spec.Target) (api.Result, error) {
	res, err := b.target("Stop", t)
	if b.Hold != nil {
		b.Hold(ctx)
	}
	return res, err
}

// Restart records the target.
func (b *Backend) Restart(_ context.Context, t spec.Target) (api.Result, error) {
	return b.target("Restart", t)
}

// Reload records the target.
func (b *Backend) Reload(_ context.Context, t spec.Target) (api.Result, error) {
	return b.target("Reload", t)
}

// Delete records the target.
func (b *Backend) Delete(_ context.Context, t spec.Target) (api.Result, error) {
	return b.target("Delete", t)
}

// Scale records the app and count.
func (b *Backend) Scale(_ context.Context, app string, n int) (api.Result, error) {
	if err := b.record("Scale", app, n); err != nil {
		return api.Result{}, err
	}
	return b.result(fmt.Sprintf("scaled %s to %d", app, n)), nil
}

// List answers Instances.
func (b *Backend) List(context.Context) ([]api.Instance, error) {
	if err := b.record("List"); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Instances, nil
}

// Describe answers Details.
func (b *Backend) Describe(_ context.Context, t spec.Target) ([]api.AppDetail, error) {
	if err := b.record("Describe", t); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Details, nil
}

// Crashes answers Groups.
func (b *Backend) Crashes(_ context.Context, app string) ([]api.CrashGroup, error) {
	if err := b.record("Crashes", fmt.Sprintf("%q", app)); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Groups, nil
}

// Crash answers Detail, or not found.
func (b *Backend) Crash(_ context.Context, id string) (api.CrashDetail, error) {
	if err := b.record("Crash", id); err != nil {
		return api.CrashDetail{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if id != b.Detail.ID {
		return api.CrashDetail{}, &spec.NotFoundError{What: "crash " + id}
	}
	return b.Detail, nil
}

// Save records the call.
func (b *Backend) Save(context.Context) (api.Result, error) {
	if err := b.record("Save"); err != nil {
		return api.Result{}, err
	}
	return b.result("saved"), nil
}

// Resurrect records the call.
func (b *Backend) Resurrect(context.Context) (api.Result, error) {
	if err := b.record("Resurrect"); err != nil {
		return api.Result{}, err
	}
	return b.result("resurrected"), nil
}

// Kill records the call and runs OnKill.
func (b *Backend) Kill(context.Context) (api.Result, error) {
	err := b.record("Kill")
	b.mu.Lock()
	onKill := b.OnKill
	b.mu.Unlock()
	if onKill != nil {
		onKill()
	}
	if err != nil {
		return api.Result{}, err
	}
	return api.Result{Message: "daemon stopped"}, nil
}

// Web records the call and answers as if the listener switched.
func (b *Backend) Web(_ context.Context, req api.WebRequest) (api.WebInfo, error) {
	err := b.record("Web " + req.Listen)
	if req.Off {
		return api.WebInfo{}, err
	}
	return api.WebInfo{URL: "http://" + req.Listen + "/#token=t", Listen: req.Listen, Token: "t", On: true}, err
}

// Version answers Ver.
func (b *Backend) Version() api.Version {
	b.record("Version")
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Ver
}

// Serve serves b on home's control socket until the test ends; the socket
// answers when Serve returns.
func Serve(t testing.TB, home string, b control.Backend) {
	t.Helper()
	ln, err := control.Listen(control.SocketPath(home))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(b, nil).ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control server: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("control server did not stop")
		}
	})
}

// DaemonEnv, when set in the environment of a test binary run as
// `<test binary> daemon`, makes TestMain call FakeDaemon; its value is the
// mode: "ok" serves, "fail" writes to stderr and exits 3, "hang" never
// answers.
const DaemonEnv = "KEEL_FAKE_DAEMON"

// StartsFile records, in KEEL_HOME, one line per fake daemon run:
// "won <pid> <sid> <cwd> <stdin>" for the daemon that took the lock and
// "lost <pid>" for one that did not.
const StartsFile = "fake-daemon-starts"

// FakeDaemon is a stand-in for `keel daemon`, for TestMain. It reads
// KEEL_HOME and the mode from the environment, takes the daemon lock (a
// loser exits 0 quietly, as the real daemon does), serves a Backend with
// Ver.Pid set until a Kill, and returns the exit code.
func FakeDaemon() int {
	home := os.Getenv("KEEL_HOME")
	switch os.Getenv(DaemonEnv) {
	case "fail":
		fmt.Fprintln(os.Stderr, "keel daemon: opening state.db: file is corrupted")
		return 3
	case "hang":
		fmt.Fprintln(os.Stderr, "keel daemon: hanging")
		os.WriteFile(filepath.Join(home, "hang.pid"), []byte(fmt.Sprint(os.Getpid())), 0o600)
		// Until the test kills it, or at worst until its KEEL_HOME is gone.
		for {
			if _, err := os.Stat(home); err != nil {
				return 1
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	lock, err := os.OpenFile(filepath.Join(home, "daemon.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		note(home, fmt.Sprintf("lost %d", os.Getpid()))
		return 0
	}
	sid, _ := unix.Getsid(0)
	cwd, _ := os.Getwd()
	stdin, _ := os.Readlink("/proc/self/fd/0")
	note(home, fmt.Sprintf("won %d %d %s %s", os.Getpid(), sid, cwd, stdin))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &Backend{Ver: api.Version{Version: "fake", Pid: os.Getpid(), Home: home}, OnKill: cancel}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := control.NewServer(b, logger).Serve(ctx, control.SocketPath(home)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func note(home, line string) {
	f, err := os.OpenFile(filepath.Join(home, StartsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(line + "\n")
}

// Starts reads StartsFile: how many daemons won and lost the lock, and the
// winners' lines.
func Starts(home string) (won []string, lost int, err error) {
	b, err := os.ReadFile(filepath.Join(home, StartsFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		switch {
		case strings.HasPrefix(l, "won "):
			won = append(won, l)
		case strings.HasPrefix(l, "lost "):
			lost++
		}
	}
	return won, lost, nil
}
