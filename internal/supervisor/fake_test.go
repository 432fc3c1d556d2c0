package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/poll"

	"github.com/keel-run/keel/internal/spec"
)

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// pendingDelays lists the delays of live timers from now, shortest first.
func (c *fakeClock) pendingDelays() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, t := range c.timers {
		if !t.stopped {
			ds = append(ds, t.at.Sub(c.now))
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

// Advance moves time forward and runs the timers that became due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

// fakeProc is a Process the test drives by hand.
type fakeProc struct {
	id      string
	pid     int
	started time.Time
	app     string
	inst    int
	sp      *spec.App // the definition it was spawned with
	events  chan Event
	clock   *fakeClock

	mu       sync.Mutex
	stops    []syscall.Signal
	exited   bool
	released bool
	autoExit bool
	notified bool // Notify was called
	t        *testing.T
}

func (p *fakeProc) ID() string           { return p.id }
func (p *fakeProc) Pid() int             { return p.pid }
func (p *fakeProc) Started() time.Time   { return p.started }
func (p *fakeProc) Events() <-chan Event { return p.events }
func (p *fakeProc) Signal(syscall.Signal) error {
	return nil
}

func (p *fakeProc) Stop(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	p.stops = append(p.stops, sig)
	auto := p.autoExit
	p.mu.Unlock()
	if auto {
		p.exit(spec.ExitSignal(spec.SignalName(sig), p.clock.Now()))
	}
	return nil
}

func (p *fakeProc) Release() {
	p.mu.Lock()
	p.released = true
	p.mu.Unlock()
}

func (p *fakeProc) stopCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.stops)
}

func (p *fakeProc) ready() { p.send(Event{Kind: EventReady}) }

func (p *fakeProc) send(ev Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		p.events <- ev
	}
}

// exit ends the process once; later calls do nothing.
func (p *fakeProc) exit(e spec.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	p.exited = true
	p.events <- Event{Kind: EventExit, Exit: e}
	close(p.events)
}

func (p *fakeProc) exitCode(c int) { p.exit(spec.ExitCode(c, p.clock.Now())) }

// fakeSpawner hands out fakeProcs and tells the test about each.
type fakeSpawner struct {
	clock     *fakeClock
	mu        sync.Mutex
	nextPid   int
	procs     []*fakeProc
	spawned   chan *fakeProc
	notifier  bool       // hand out Notifiers
	t         *testing.T // for notifyingProc
	fail      error      // next Spawn fails with this
	survivors []Survivor
	autoExit  bool
}

func newFakeSpawner(c *fakeClock) *fakeSpawner {
	return &fakeSpawner{clock: c, nextPid: 1000, spawned: make(chan *fakeProc, 100), autoExit: true}
}

func (f *fakeSpawner) Spawn(ctx context.Context, req SpawnRequest) (Process, error) {
	f.mu.Lock()
	if err := f.fail; err != nil {
		f.fail = nil
		f.mu.Unlock()
		return nil, err
	}
	f.nextPid++
	p := &fakeProc{
		id: fmt.Sprintf("p%d", f.nextPid), pid: f.nextPid, started: f.clock.Now(),
		app: req.App.Name, inst: req.Instance, sp: req.App, events: make(chan Event, 16),
		clock: f.clock, autoExit: f.autoExit, t: f.t,
	}
	f.procs = append(f.procs, p)
	notifier := f.notifier
	f.mu.Unlock()
	f.spawned <- p
	if notifier {
		return notifyingProc{p}, nil
	}
	return p, nil
}

// notifyingProc is a fakeProc that hands its events to a function
// (Notifier), as keel's keeper client does.
type notifyingProc struct{ *fakeProc }

func (n notifyingProc) Notify(f func(Event)) {
	n.mu.Lock()
	n.notified = true
	n.mu.Unlock()
	go func() {
		for ev := range n.events {
			f(ev)
		}
	}()
}

func (n notifyingProc) Events() <-chan Event {
	n.t.Error("the supervisor read Events of a Notifier")
	return n.events
}

func (f *fakeSpawner) Survivors(context.Context) ([]Survivor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.survivors, nil
}

// memStore is an in-memory Store.
type memStore struct {
	mu   sync.Mutex
	apps map[string]AppRecord
}

func newMemStore() *memStore { return &memStore{apps: map[string]AppRecord{}} }

func (m *memStore) SaveApp(rec AppRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apps[rec.Spec.Name] = rec
	return nil
}

func (m *memStore) DeleteApp(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.apps, name)
	return nil
}

func (m *memStore) LoadApps() ([]AppRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []AppRecord
	for _, r := range m.apps {
		out = append(out, r)
	}
	return out, nil
}

func (m *memStore) get(name string) (AppRecord, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.apps[name]
	return r, ok
}

// badTransitions fails the test when the supervisor logs a status change
// its table does not allow.
type badTransitions struct {
	slog.Handler
	t testing.TB
}

func (h badTransitions) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "status change not allowed" {
		var attrs []string
		r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
		h.t.Errorf("status change not allowed: %v", attrs)
	}
	return nil
}
func (h badTransitions) Enabled(context.Context, slog.Level) bool { return true }
func (h badTransitions) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h badTransitions) WithGroup(string) slog.Handler            { return h }

type harness struct {
	t      *testing.T
	clock  *fakeClock
	spawn  *fakeSpawner
	store  *memStore
	sup    *Supervisor
	cancel context.CancelFunc
	done   chan error
	exits  chan ExitInfo
	served servingLog
}

// servingLog keeps what the supervisor published to Config.Serving.
type servingLog struct {
	mu    sync.Mutex
	slots map[string][]int
}

func (l *servingLog) record(app string, slots []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.slots == nil {
		l.slots = map[string][]int{}
	}
	l.slots[app] = slots
}

func (l *servingLog) get(app string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slots[app]
}

func newHarness(t *testing.T, setup ...func(*harness)) *harness {
	t.Helper()
	c := newFakeClock()
	h := &harness{t: t, clock: c, spawn: newFakeSpawner(c), store: newMemStore(), exits: make(chan ExitInfo, 100)}
	for _, f := range setup {
		f(h)
	}
	h.sup = New(Config{
		Spawner: h.spawn, Store: h.store, Clock: c,
		Logger:  slog.New(badTransitions{t: t}),
		OnExit:  func(e ExitInfo) { h.exits <- e },
		Serving: h.served.record,
	})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.sup.Run(ctx) }()
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	// Let every fake process end so no forwarding goroutine is left.
	h.spawn.mu.Lock()
	procs := append([]*fakeProc(nil), h.spawn.procs...)
	h.spawn.mu.Unlock()
	for _, p := range procs {
		p.exitCode(0)
	}
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// nextSpawn waits for the next process the supervisor spawns.
func (h *harness) nextSpawn() *fakeProc {
	h.t.Helper()
	select {
	case p := <-h.spawn.spawned:
		return p
	case <-time.After(10 * time.Second):
		h.t.Fatal("no process was spawned")
		return nil
	}
}

func (h *harness) noSpawn() {
	h.t.Helper()
	// Round-trip through the owner loop twice so any spawn it decided on
	// has been handed to the spawner goroutine and reported.
	h.list()
	h.list()
	select {
	case p := <-h.spawn.spawned:
		h.t.Fatalf("unexpected spawn of %s:%d (pid %d)", p.app, p.inst, p.pid)
	default:
	}
}

func (h *harness) list() []InstanceInfo {
	h.t.Helper()
	l, err := h.sup.List(h.ctx())
	if err != nil {
		h.t.Fatalf("List: %v", err)
	}
	return l
}

// waitStatus waits until instance app:i has status st and returns it.
func (h *harness) waitStatus(app string, i int, st Status) InstanceInfo {
	h.t.Helper()
	var last []InstanceInfo
	var found InstanceInfo
	if poll.Within(10*time.Second, func() bool {
		last = h.list()
		for _, in := range last {
			if in.App == app && in.Instance == i && in.Status == st {
				found = in
				return true
			}
		}
		return false
	}) {
		return found
	}
	h.t.Fatalf("%s:%d never became %s; instances: %+v", app, i, st, last)
	return InstanceInfo{}
}

func (h *harness) start(a *spec.App) []InstanceInfo {
	h.t.Helper()
	a.Normalize()
	l, err := h.sup.Start(h.ctx(), []*spec.App{a})
	if err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	return l
}

func (h *harness) nextExit() ExitInfo {
	h.t.Helper()
	select {
	case e := <-h.exits:
		return e
	case <-time.After(10 * time.Second):
		h.t.Fatal("no exit reported")
		return ExitInfo{}
	}
}

var errBoom = errors.New("boom")
