package trigger

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/procstat"
	"github.com/keel-run/keel/internal/spec"
)

// lives is a concurrency-safe list of live instances for Config.Live. Each
// call is also announced on calls (without blocking), so a test can wait
// for a trigger to have looked.
type lives struct {
	mu    sync.Mutex
	l     []Live
	calls chan struct{}
}

func newLives(l ...Live) *lives { return &lives{l: l, calls: make(chan struct{}, 1024)} }

func (l *lives) get() []Live {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case l.calls <- struct{}{}:
	default:
	}
	return append([]Live(nil), l.l...)
}

func (l *lives) set(x ...Live) {
	l.mu.Lock()
	l.l = x
	l.mu.Unlock()
}

// waitCalls waits until get has been called n more times.
func (l *lives) waitCalls(t *testing.T, n int) {
	t.Helper()
	// Drop calls announced before now.
	for len(l.calls) > 0 {
		<-l.calls
	}
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-l.calls:
		case <-deadline:
			t.Fatalf("Live was not called %d times within 10s", n)
		}
	}
}

func TestMaxMemoryRestartsTheInstanceThatGrows(t *testing.T) {
	small, big := startHelper(t, "grow"), startHelper(t, "grow")
	live := newLives(Live{Instance: 0, Pid: small.pid()}, Live{Instance: 1, Pid: big.pid()})
	rec := newRecorder()
	set, err := Start(context.Background(), Config{
		App:            &spec.App{Name: "m", MaxMemory: 32 << 20},
		Live:           live.get,
		Restart:        rec.restart,
		Memory:         procstat.TreeRSS,
		MemoryInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop()

	live.waitCalls(t, 3) // three checks of two small processes
	rec.none(t)

	big.say(t, "grow", "grown")
	r := rec.next(t)
	if r.Instance != 1 || r.Reason != ReasonMaxMemory || !regexp.MustCompile(`^rss \d+(\.\d)?M > 32M$`).MatchString(r.Detail) {
		t.Fatalf("restart = %+v, want instance 1, max_memory, \"rss NM > 32M\"", r)
	}

	// The same process is not asked again while it is on its way out.
	live.waitCalls(t, 5)
	rec.none(t)

	// Its replacement is a new process: it fires again when it grows.
	again := startHelper(t, "grow")
	live.set(Live{Instance: 0, Pid: small.pid()}, Live{Instance: 1, Pid: again.pid()})
	live.waitCalls(t, 3)
	rec.none(t)
	again.say(t, "grow", "grown")
	if r := rec.next(t); r.Instance != 1 || r.Reason != ReasonMaxMemory {
		t.Fatalf("restart = %+v, want instance 1 for max_memory", r)
	}

	info := set.Info()
	if len(info) != 1 || info[0].Kind != ReasonMaxMemory || info[0].Count != 2 || info[0].LastFired == nil || info[0].Detail != "32M" {
		t.Errorf("Info = %+v", info)
	}
}

func TestMaxMemorySkipsVanishedPids(t *testing.T) {
	live := newLives(Live{Instance: 0, Pid: 1 << 30}) // no such process
	rec := newRecorder()
	set, err := Start(context.Background(), Config{
		App:            &spec.App{Name: "m", MaxMemory: 1},
		Live:           live.get,
		Restart:        rec.restart,
		MemoryInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop()
	live.waitCalls(t, 3)
	rec.none(t)
}

func TestCronFires(t *testing.T) {
	rec := newRecorder()
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	set, err := Start(context.Background(), Config{
		App:     &spec.App{Name: "c", CronRestart: "@every 1s"},
		Restart: rec.restart,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop()
	r := rec.next(t)
	if r != (Restart{Instance: AllInstances, Reason: ReasonCron, Detail: "@every 1s"}) {
		t.Fatalf("restart = %+v", r)
	}
	info := set.Info()
	if len(info) != 1 || info[0].Kind != ReasonCron || info[0].Count < 1 || info[0].LastFired == nil ||
		!strings.HasPrefix(info[0].Detail, "@every 1s (next ") {
		t.Errorf("Info = %+v", info)
	}

	// Info's next activation comes from the injected clock.
	c, err := newCron(Config{App: &spec.App{CronRestart: "0 3 * * *"}, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.describe(), "0 3 * * * (next 2026-11-27T03:00:00Z)"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}

func TestStartNamesTheBadOption(t *testing.T) {
	dir := t.TempDir()
	noop := func(Restart) {}
	for _, tc := range []struct {
		app   spec.App
		field string
	}{
		{spec.App{CronRestart: "61 * * * *"}, "cron_restart"},
		{spec.App{CronRestart: "every minute"}, "cron_restart"},
		{spec.App{Watch: []string{"missing"}, Cwd: dir}, "watch"},
		{spec.App{Watch: []string{"."}, WatchIgnore: []string{"[x"}, Cwd: dir}, "watch_ignore"},
		{spec.App{HealthURL: "ftp://127.0.0.1/"}, "health_url"},
		// The watch is valid but health_url is not: no watcher may be left
		// open (goleak checks).
		{spec.App{Watch: []string{"."}, Cwd: dir, HealthURL: "localhost:80"}, "health_url"},
	} {
		_, err := Start(context.Background(), Config{App: &tc.app, Restart: noop, Live: newLives().get})
		var fe *spec.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Start(%+v) = %v, want a FieldError for %s", tc.app, err, tc.field)
		}
	}
	if _, err := Start(context.Background(), Config{App: &spec.App{MaxMemory: 1}, Restart: noop}); err == nil {
		t.Error("max_memory without Config.Live: no error")
	}
	set, err := Start(context.Background(), Config{App: &spec.App{}, Restart: noop})
	if err != nil || len(set.Info()) != 0 {
		t.Errorf("an app with no triggers: %v, %+v", err, set)
	}
	set.Stop()
}

func TestHealthFiresAfterConsecutiveFailures(t *testing.T) {
	var (
		status atomic.Int32
		fails  atomic.Int64
		oks    = make(chan struct{}, 1024)
	)
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := int(status.Load())
		if code != 200 {
			fails.Add(1)
		} else {
			select {
			case oks <- struct{}{}:
			default:
			}
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()

	type fired struct {
		r     Restart
		fails int64 // failing answers served when the restart was asked
	}
	got := make(chan fired, 16)
	live := newLives(Live{Instance: 0, Pid: os.Getpid()})
	url := srv.URL + "/healthz"
	set, err := Start(context.Background(), Config{
		App:           &spec.App{Name: "h", HealthURL: url, HealthInterval: spec.Duration(10 * time.Millisecond), HealthFailures: 3},
		Live:          live.get,
		Restart:       func(r Restart) { got <- fired{r, fails.Load()} },
		HealthTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop()
	next := func() fired {
		t.Helper()
		select {
		case f := <-got:
			return f
		case <-time.After(10 * time.Second):
			t.Fatal("no health restart within 10s")
			return fired{}
		}
	}

	// Healthy: probes succeed, nothing fires.
	for range 5 {
		select {
		case <-oks:
		case <-time.After(10 * time.Second):
			t.Fatal("health_url not probed")
		}
	}
	if len(got) != 0 {
		t.Fatalf("fired while healthy: %+v", <-got)
	}

	// Failing: the third failure in a row fires, not an earlier one; then
	// the count starts again.
	status.Store(503)
	f := next()
	want := Restart{Instance: AllInstances, Reason: ReasonHealth, Detail: "GET " + url + ": 503 ×3"}
	if f.r != want || f.fails != 3 {
		t.Fatalf("first restart %+v after %d failures, want %+v after 3", f.r, f.fails, want)
	}
	if f = next(); f.fails != 6 {
		t.Fatalf("second restart after %d failures, want 6", f.fails)
	}

	// No live instance: no probe, no restart.
	live.set()
	live.waitCalls(t, 1) // a probe in flight has finished
	before := fails.Load()
	live.waitCalls(t, 10)
	if n := fails.Load(); n != before {
		t.Errorf("probed %d times with no live instance", n-before)
	}
	if len(got) > 0 {
		t.Errorf("fired with no live instance: %+v", <-got)
	}

	info := set.Info()
	if len(info) != 1 || info[0].Kind != ReasonHealth || info[0].Count < 2 || info[0].LastFired == nil {
		t.Errorf("Info = %+v", info)
	}
}

func TestHealthRefusedAndTimeout(t *testing.T) {
	// Refused: a server that is gone.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	// Timeout: a server that never answers within the timeout.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)

	for _, tc := range []struct{ url, want string }{
		{gone.URL, "GET " + gone.URL + ": connection refused ×2"},
		{slow.URL, "GET " + slow.URL + ": timeout after 50ms ×2"},
	} {
		rec := newRecorder()
		set, err := Start(context.Background(), Config{
			App:           &spec.App{Name: "h", HealthURL: tc.url, HealthInterval: spec.Duration(10 * time.Millisecond), HealthFailures: 2},
			Live:          newLives(Live{Instance: 0, Pid: os.Getpid()}).get,
			Restart:       rec.restart,
			HealthTimeout: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		r := rec.next(t)
		set.Stop()
		if r.Detail != tc.want {
			t.Errorf("detail %q, want %q", r.Detail, tc.want)
		}
	}
}

func TestStopLeavesNothingRunning(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	probed := make(chan struct{}, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case probed <- struct{}{}:
		default:
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set, err := Start(ctx, Config{
		App: &spec.App{
			Name: "all", MaxMemory: 1 << 40, CronRestart: "@every 1s", Watch: []string{t.TempDir()},
			HealthURL: srv.URL, HealthInterval: spec.Duration(5 * time.Millisecond),
		},
		Live:           newLives(Live{Instance: 0, Pid: os.Getpid()}).get,
		Restart:        func(Restart) {},
		MemoryInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-probed:
	case <-time.After(10 * time.Second):
		t.Fatal("health_url not probed")
	}
	kinds := []string{}
	for _, in := range set.Info() {
		kinds = append(kinds, in.Kind)
	}
	if got := strings.Join(kinds, ","); got != "max_memory,cron,watch,health" {
		t.Errorf("Info kinds = %s", got)
	}
	cancel() // the parent context ending stops the goroutines too
	set.Stop()
	set.Stop() // idempotent
	srv.Close()
	goleak.VerifyNone(t, ignore)
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{
		512: "512", 2048: "2K", 312 << 20: "312M", 300<<20 + 512<<10: "300.5M", 3 << 29: "1.5G",
	} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWatchIgnored(t *testing.T) {
	base := filepath.FromSlash("/app")
	w := &watch{base: base, ignore: append(defaultIgnore(), "*.log", "dist/*", "/app/tmp")}
	for rel, want := range map[string]bool{
		"src/a.js":                   false,
		"node_modules/x/index.js":    true,
		"src/node_modules/y.js":      true,
		".git/HEAD":                  true,
		"src/.a.js.swp":              true,
		"logs/app.log":               true,
		"dist/bundle.js":             true,
		"dist":                       false,
		"tmp/cache":                  true,
		"src/dist/x.js":              false,
		".gitignore":                 false,
		"src/a.js~":                  true,
		"src/deep/er/node_modules/z": true,
	} {
		if got := w.ignored(base, filepath.FromSlash(rel)); got != want {
			t.Errorf("ignored(%q) = %v, want %v", rel, got, want)
		}
	}
}
