package control

import (
	"context"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/spec"
)

// Backend is what the control server calls: the daemon implements it on top
// of the supervisor. Every method may be called concurrently. Errors are
// shown to the user as they are, so they must read as one line that says
// what failed and why.
type Backend interface {
	Start(ctx context.Context, apps []*spec.App) (api.Result, error)
	// Apply makes the running apps match a config file's (see
	// api.ApplyRequest); a failed app is reported in the result.
	Apply(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error)
	Stop(ctx context.Context, t spec.Target) (api.Result, error)
	Restart(ctx context.Context, t spec.Target) (api.Result, error)
	Reload(ctx context.Context, t spec.Target) (api.Result, error)
	Scale(ctx context.Context, app string, n int) (api.Result, error)
	Delete(ctx context.Context, t spec.Target) (api.Result, error)
	List(ctx context.Context) ([]api.Instance, error)
	Describe(ctx context.Context, t spec.Target) ([]api.AppDetail, error)
	Crashes(ctx context.Context, app string) ([]api.CrashGroup, error)
	Crash(ctx context.Context, id string) (api.CrashDetail, error)
	Save(ctx context.Context) (api.Result, error)
	Resurrect(ctx context.Context) (api.Result, error)
	// Kill stops every app, answers, then makes the daemon exit.
	Kill(ctx context.Context) (api.Result, error)
	Version() api.Version
	// Web switches the web listener on or off (keel web).
	Web(ctx context.Context, req api.WebRequest) (api.WebInfo, error)
}
