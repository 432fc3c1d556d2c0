package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keel-run/keel/internal/api"
)

func itoa(n int) string { return strconv.Itoa(n) }

// browser starts headless Chromium (Debian's chromium, which .ci/run
// installs) with a fresh profile, for one test.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed: .ci/run installs Debian's chromium package (apt-get install chromium); this test needs it")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelCtx := chromedp.NewContext(actx)
	// The first call starts the browser, which lives as long as its
	// context: no timeout on that one; the test's actions get one.
	if err := chromedp.Do(bctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	ctx, cancelTime := context.WithTimeout(bctx, 3*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelCtx(); cancelAlloc() })
	return ctx
}

// rows is what the page shows of the instances: app:instance → pid/status.
type row struct {
	App      string `json:"app"`
	Instance string `json:"instance"`
	Pid      string `json:"pid"`
	Status   string `json:"status"`
}

const rowsJS = `[...document.querySelectorAll('#apps tr[data-app]')].map(r => ({app: r.dataset.app, instance: r.dataset.instance, pid: r.dataset.pid, status: r.dataset.status}))`

func pageRows(t *testing.T, ctx context.Context) []row {
	t.Helper()
	rs, err := chromedp.Run(ctx, chromedp.Evaluate[[]row](rowsJS))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	return rs
}

// waitRows polls the page until cond holds for its rows.
func waitRows(t *testing.T, ctx context.Context, what string, cond func([]row) bool) []row {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs := pageRows(t, ctx)
		if cond(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the page to show %s; it shows %+v", what, rs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDashboardInChromium(t *testing.T) {
	ctx := browser(t)
	e := newEnv(t)
	e.app("svc", "sleep", "-i", "2")
	e.app("worker", "sleep")
	before := e.waitFor("3 online", func(l []api.Instance) bool {
		return allStatus("svc", 2, "online")(l) && allStatus("worker", 1, "online")(l)
	})
	w := e.webOn()
	base := "http://" + w.Listen + "/"

	// A wrong token shows the sign-in form and no data.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"#token="+strings.Repeat("0", 32)),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	); err != nil {
		t.Fatalf("wrong token: %v", err)
	}
	mainHidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('main').hidden`))
	if err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if !mainHidden || strings.Contains(text, "svc") || !strings.Contains(text, "wrong") {
		t.Fatalf("with a wrong token the page shows main=%v text %q", !mainHidden, text)
	}
	saveShot(t, ctx, "wrong-token.png")

	// The right token: every instance, online.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#token="+w.Token), chromedp.WaitVisible(chromedp.CSS("#apps tr[data-app]"))); err != nil {
		t.Fatalf("signing in: %v", err)
	}
	pids := map[string]bool{}
	for _, in := range before {
		pids[itoa(in.Pid)] = true
	}
	waitRows(t, ctx, "every instance online with its pid", func(rs []row) bool {
		n := 0
		for _, r := range rs {
			if r.Status == "online" && pids[r.Pid] {
				n++
			}
		}
		return len(rs) == 3 && n == 3
	})

	// SIGKILL one: the page shows it restarting, then online with a new pid.
	var victim api.Instance
	for _, in := range before {
		if in.App == "svc" && in.Instance == 1 {
			victim = in
		}
	}
	killed := time.Now()
	syscall.Kill(victim.Pid, syscall.SIGKILL)
	waitRows(t, ctx, "the killed instance replaced", func(rs []row) bool {
		for _, r := range rs {
			if r.App == "svc" && r.Instance == "1" && r.Pid != itoa(victim.Pid) {
				return true
			}
		}
		return false
	})
	t.Logf("the page showed the killed instance replaced %s after the SIGKILL", time.Since(killed).Round(time.Millisecond))
	rs := waitRows(t, ctx, "svc back online", func(rs []row) bool {
		n := 0
		for _, r := range rs {
			if r.App == "svc" && r.Status == "online" {
				n++
			}
		}
		return n == 2
	})
	old := map[string]string{}
	for _, r := range rs {
		old[r.App+":"+r.Instance] = r.Pid
	}

	// Reload svc through its button and the confirmation: new pids.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`button[data-action="reload"][data-target="svc"]`)),
		chromedp.WaitVisible(chromedp.CSS("#modal-ok")),
		chromedp.Click(chromedp.CSS("#modal-ok")),
	); err != nil {
		t.Fatalf("clicking reload: %v", err)
	}
	waitRows(t, ctx, "svc reloaded: new pids, online", func(rs []row) bool {
		n := 0
		for _, r := range rs {
			if r.App == "svc" && r.Status == "online" && r.Pid != old["svc:"+r.Instance] && r.Pid != "0" {
				n++
			}
			if r.App == "worker" && r.Pid != old["worker:0"] {
				return false // reload of svc touched worker
			}
		}
		return n == 2
	})

	// Crash group and log tail are on the page; then the screenshot.
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#crashes tr[data-id]`))); err != nil {
		t.Fatalf("crash groups: %v", err)
	}
	// A moment for the charts to gain a few points before the picture.
	if err := chromedp.Do(ctx, chromedp.Sleep(2500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	saveShot(t, ctx, "dashboard.png")
}

// saveShot keeps a screenshot of the page as a test artifact
// (t.ArtifactDir, or $KEEL_SCREENSHOTS when set).
func saveShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := t.ArtifactDir()
	if d := os.Getenv("KEEL_SCREENSHOTS"); d != "" {
		dir = d
	}
	os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
