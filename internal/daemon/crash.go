package daemon

import (
	"log/slog"
	"os/exec"
	"sync"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/crash"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/store"
	"github.com/keel-run/keel/internal/supervisor"
)

// crashBlob is the store key of the crash book.
const crashBlob = "crashes"

// tailBytes is how much of each stream's end a crash report is cut from.
const tailBytes = 64 << 10

// crashRecorder turns abnormal exits into crash groups, persists them and
// fires on_crash hooks. record runs on the supervisor's exit queue (one
// goroutine); queries come from control requests, hence the mutex.
type crashRecorder struct {
	home  string
	store *store.Store // nil: not persisted (keel run)
	log   *slog.Logger
	note  *crash.Notifier

	mu   sync.Mutex // guards book
	book *crash.Book
}

func newCrashRecorder(home string, st *store.Store, log *slog.Logger, start func(*exec.Cmd) (func() error, error)) *crashRecorder {
	c := &crashRecorder{
		home:  home,
		store: st,
		log:   log,
		book:  crash.NewBook(crash.Limits{}),
		note:  crash.NewNotifier(crash.NotifierOptions{Logger: log, Start: start}),
	}
	if st != nil {
		if _, err := st.GetBlob(crashBlob, c.book); err != nil {
			log.Error("reading crash history; starting afresh", "err", err)
			c.book = crash.NewBook(crash.Limits{})
		}
	}
	return c
}

// abnormal reports whether an exit deserves a crash record: one keel did
// not ask for that was not clean, or one keel forced because the app was
// unhealthy (memory, health check, readiness).
func abnormal(e supervisor.ExitInfo) bool {
	switch e.Exit.Reason {
	case "":
		return !e.Exit.Clean()
	case "max_memory", "health", "ready_timeout":
		return true
	}
	return false
}

// record files an exit if it was a crash. The keeper reports an exit only
// after the app's pipes are drained, so the logs hold its last words.
func (c *crashRecorder) record(e supervisor.ExitInfo) {
	if !abnormal(e) {
		return
	}
	var stderr, stdout []byte
	if e.CrashText != "" {
		// A graceful crash: the app told keel what it printed. Its logs
		// will not do: the replacement, started at once, writes to the
		// same files while this process drains, and may crash in turn
		// before this one exits. Ending the read where the replacement
		// started would not do either: a line's time is when its keeper
		// read it, which on a busy machine can come after that start.
		// (Only a graceful crash is replaced before its exit.)
		stderr = []byte(e.CrashText)
	} else {
		// Only what this run wrote: an earlier run's trace must not be
		// blamed.
		stderr, _ = logs.TailRawSince(logs.Path(c.home, e.App, e.Instance, logs.Stderr), tailBytes, e.Started)
		stdout, _ = logs.TailRawSince(logs.Path(c.home, e.App, e.Instance, logs.Stdout), tailBytes, e.Started)
	}
	rep := crash.Parse(stderr, stdout, e.Exit)
	c.mu.Lock()
	g, isNew := c.book.Add(e.App, e.Instance, e.Pid, rep, e.Exit)
	var err error
	if c.store != nil {
		err = c.store.PutBlob(crashBlob, c.book)
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Error("saving crash history", "err", err)
	}
	c.log.Info("crash recorded", "app", e.App, "instance", e.Instance, "pid", e.Pid,
		"group", g.ID, "new", isNew, "title", g.Title)
	if e.Spec != nil && e.Spec.OnCrash != "" {
		c.note.Notify(e.Spec.OnCrash, g, isNew, crash.ExitRecord{Instance: e.Instance, Pid: e.Pid, Exit: e.Exit})
	}
}

func groupAPI(g crash.Group) api.CrashGroup {
	return api.CrashGroup{
		ID: g.ID, App: g.App, Signature: g.Signature, Title: g.Title, Count: g.Count,
		FirstSeen: g.FirstSeen, LastSeen: g.LastSeen, LastStack: g.LastStack,
	}
}

func (c *crashRecorder) groups(app string) []api.CrashGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	gs := c.book.Groups(app)
	out := make([]api.CrashGroup, 0, len(gs))
	for _, g := range gs {
		out = append(out, groupAPI(g))
	}
	return out
}

func (c *crashRecorder) get(id string) (api.CrashDetail, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.book.Get(id)
	if !ok {
		return api.CrashDetail{}, false
	}
	d := api.CrashDetail{CrashGroup: groupAPI(g), Kind: string(g.Kind)}
	for _, e := range g.Exits {
		d.Exits = append(d.Exits, api.ExitRecord{Instance: e.Instance, Pid: e.Pid, Exit: e.Exit})
	}
	return d, true
}

func (c *crashRecorder) latest(app string) (api.CrashGroup, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.book.Latest(app)
	if !ok {
		return api.CrashGroup{}, false
	}
	return groupAPI(g), true
}

// close waits for on_crash deliveries under way.
func (c *crashRecorder) close() { c.note.Close() }
