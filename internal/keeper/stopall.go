package keeper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/keel-run/keel/internal/proc"
)

// StopAll stops, with no daemon running, every instance that the keepers
// in home still run (a daemon that was SIGKILLed leaves them serving, on
// purpose): each keeper process gets SIGTERM, so it stops its apps as
// configured (kill_signal, then SIGKILL after kill_timeout) and ends
// with them and their descendants. A keeper still running when ctx is
// done is SIGKILLed, with its apps' process groups. It returns how many
// instances it found running.
func StopAll(ctx context.Context, home string) (int, error) {
	ents, err := os.ReadDir(RunDir(home))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("finding keepers: %w", err)
	}
	found := 0
	keepers := map[proc.Identity][]proc.Identity{} // keeper → its apps
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		st, err := readState(pathsFor(home, id).state)
		if err != nil {
			continue // being written, or removed meanwhile
		}
		k := proc.Identity{Pid: st.KeeperPid, Start: st.KeeperStart}
		app := proc.Identity{Pid: st.Pid, Start: st.PidStart}
		if !k.Running() {
			continue // the next daemon reclaims what a dead keeper left
		}
		keepers[k] = append(keepers[k], app)
		if st.Exit == nil && app.Running() {
			found++
		}
	}
	for k := range keepers {
		if err := k.Signal(syscall.SIGTERM); err != nil {
			return found, fmt.Errorf("stopping keeper %d: %w", k.Pid, err)
		}
	}
	var errs []error
	for k, apps := range keepers {
		if k.WaitGone(ctx) == nil && !k.Running() {
			continue
		}
		k.Signal(syscall.SIGKILL)
		for _, app := range apps {
			app.KillGroup(syscall.SIGKILL)
		}
		gctx, cancel := context.WithTimeout(context.Background(), goneTimeout)
		err := k.WaitGone(gctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("keeper %d did not end after SIGKILL: %w", k.Pid, err))
		}
	}
	return found, errors.Join(errs...)
}
