package crash

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func group(app, word string) Group {
	var b Book
	g, _ := b.Add(app, 0, 4242, rep(word), at(0))
	return g
}

func exitRec(pid int) ExitRecord {
	return ExitRecord{Instance: 1, Pid: pid, Exit: spec.ExitCode(2, t0)}
}

// waitFor receives from c within a deadline.
func waitFor[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestNotifierURL(t *testing.T) {
	got := make(chan Notification, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- n
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("server at %s", srv.URL)
	}

	clock := &fakeClock{t: t0}
	done := make(chan Delivery, 10)
	n := NewNotifier(NotifierOptions{Now: clock.Now, Done: func(d Delivery) { done <- d }})
	defer n.Close()

	g := group("api", "connect")
	if !n.Notify(srv.URL, g, true, exitRec(100)) {
		t.Fatal("a new group was not notified")
	}
	first := waitFor(t, got, "the first notification")
	if d := waitFor(t, done, "the first delivery"); d.Err != nil {
		t.Fatalf("delivery: %v", d.Err)
	}
	if first.Event != "crash" || !first.New || first.Suppressed != 0 || first.Group.ID != g.ID ||
		first.Group.Title != g.Title || first.Group.Count != 1 || first.Exit.Pid != 100 || first.Exit.Instance != 1 {
		t.Fatalf("notification %+v", first)
	}

	// Repeats within ten minutes are held back, and counted.
	for _, d := range []time.Duration{time.Minute, 5 * time.Minute, 3*time.Minute + 59*time.Second} {
		clock.Advance(d)
		if n.Notify(srv.URL, g, false, exitRec(101)) {
			t.Fatalf("a repeat %s after the last notification was sent", d)
		}
	}
	clock.Advance(time.Second) // ten minutes since the first
	if !n.Notify(srv.URL, g, false, exitRec(102)) {
		t.Fatal("a repeat after ten minutes was not sent")
	}
	second := waitFor(t, got, "the second notification")
	if second.New || second.Suppressed != 3 || second.Exit.Pid != 102 {
		t.Fatalf("second notification %+v", second)
	}
	waitFor(t, done, "the second delivery")
	n.Close()
	if n.Notify(srv.URL, group("api", "other"), true, exitRec(1)) {
		t.Fatal("Notify after Close started a delivery")
	}
	if len(got) != 0 {
		t.Fatalf("%d unexpected notifications", len(got))
	}
}

// TestNotifierHTTPS posts over TLS, with the server's certificate verified
// for the URL's host: trusted through TLSConfig, refused without.
func TestNotifierHTTPS(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- r.TLS.ServerName + " " + r.Header.Get("Authorization") + " " + n.Group.App
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	// httptest's certificate is for 127.0.0.1 and example.com: dial the
	// one, name the other, so that SNI and verification use the name.
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	hook := "https://hook:s3cret@example.com:" + port + "/crash"

	done := make(chan Delivery, 1)
	n := NewNotifier(NotifierOptions{TLSConfig: &tls.Config{RootCAs: roots}, Done: func(d Delivery) { done <- d }})
	n.client.Dial = dial
	if !n.Notify(hook, group("api", "tls"), true, exitRec(1)) {
		t.Fatal("not started")
	}
	n.Close()
	if d := waitFor(t, done, "the delivery"); d.Err != nil {
		t.Fatalf("delivery over TLS: %v", d.Err)
	}
	if g := waitFor(t, got, "the notification"); g != "example.com Basic aG9vazpzM2NyZXQ= api" {
		t.Fatalf("server saw %q, want SNI example.com, basic auth and the crash", g)
	}

	// The system's roots do not know httptest's certificate authority.
	n = NewNotifier(NotifierOptions{Done: func(d Delivery) { done <- d }})
	n.client.Dial = dial
	n.Notify(hook, group("api", "tls"), true, exitRec(1))
	n.Close()
	d := waitFor(t, done, "the delivery")
	if d.Err == nil || !strings.Contains(d.Err.Error(), "certificate") || strings.Contains(d.Err.Error(), "s3cret") {
		t.Fatalf("delivery to an untrusted server: %v, want a certificate error without the password", d.Err)
	}
	if len(got) != 0 {
		t.Fatal("the untrusted server got the notification")
	}
}

func TestNotifierCommand(t *testing.T) {
	dir := t.TempDir()
	out, env := filepath.Join(dir, "crash.json"), filepath.Join(dir, "env")
	cmd := fmt.Sprintf(`cat > '%s'; printf '%%s|%%s|%%s|%%s' "$KEEL_CRASH_APP" "$KEEL_CRASH_ID" "$KEEL_CRASH_COUNT" "$KEEL_CRASH_NEW" > '%s'`, out, env)
	done := make(chan Delivery, 1)
	n := NewNotifier(NotifierOptions{Now: (&fakeClock{t: t0}).Now, Done: func(d Delivery) { done <- d }})
	g := group("worker", "parse")
	if !n.Notify(cmd, g, true, exitRec(7)) {
		t.Fatal("not started")
	}
	n.Close() // waits for the command
	if d := waitFor(t, done, "the delivery"); d.Err != nil {
		t.Fatal(d.Err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var note Notification
	if err := json.Unmarshal(data, &note); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	if note.Group.ID != g.ID || note.Group.App != "worker" || note.Exit.Pid != 7 || !note.New || len(note.Group.Exits) != 1 {
		t.Fatalf("stdin was %s", data)
	}
	if e, _ := os.ReadFile(env); string(e) != "worker|"+g.ID+"|1|true" {
		t.Fatalf("environment %q", e)
	}
}

func TestNotifierFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	defer srv.Close()

	cases := []struct{ target, want string }{
		{srv.URL + "/hook", "500 Internal Server Error"},
		{closed.URL, "connection refused"},
		{"echo failing >&2; exit 3", "exit status 3: failing"},
		{"/nonexistent/notify-crash", "exit status 127"},
	}
	for _, c := range cases {
		done := make(chan Delivery, 1)
		n := NewNotifier(NotifierOptions{Done: func(d Delivery) { done <- d }})
		if !n.Notify(c.target, group("api", "x"), true, exitRec(1)) {
			t.Fatalf("%s: not started", c.target)
		}
		n.Close()
		d := waitFor(t, done, "the delivery")
		if d.Err == nil || !strings.Contains(d.Err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.target, d.Err, c.want)
		}
	}
	n := NewNotifier(NotifierOptions{})
	if n.Notify("  ", group("api", "x"), true, exitRec(1)) {
		t.Error("an empty on_crash started a delivery")
	}
	n.Close()
}

// TestNotifierTimeout: a hook that hangs is killed with every process it
// started, and Close does not wait for it longer than the timeout.
func TestNotifierTimeout(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "alive")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The hook starts the hanging helper as a grandchild: only killing the
	// whole process group ends it.
	cmd := fmt.Sprintf(`%s=hang KEEL_CRASH_TEST_FIFO='%s' '%s' -test.run='^$' & wait`, helperEnv, fifo, exe)
	dead := make(chan error, 1)
	go func() {
		f, err := os.Open(fifo) // returns once the helper opened it for writing
		if err == nil {
			_, err = io.ReadAll(f) // returns at EOF: when the helper is dead
			f.Close()
		}
		dead <- err
	}()
	done := make(chan Delivery, 1)
	// A second: time enough for the helper to start and open the fifo.
	n := NewNotifier(NotifierOptions{Timeout: time.Second, Done: func(d Delivery) { done <- d }})
	if !n.Notify(cmd, group("api", "x"), true, exitRec(1)) {
		t.Fatal("not started")
	}
	if err := waitFor(t, dead, "the helper's death"); err != nil {
		t.Fatal(err)
	}
	n.Close()
	d := waitFor(t, done, "the delivery")
	if d.Err == nil || !strings.Contains(d.Err.Error(), "timed out after 1s") {
		t.Fatalf("error %v", d.Err)
	}
}

func helperHang() {
	f, err := os.OpenFile(os.Getenv("KEEL_CRASH_TEST_FIFO"), os.O_WRONLY, 0)
	if err != nil {
		os.Exit(101)
	}
	fmt.Fprintln(f, "hanging")
	<-time.After(time.Hour) // a timer, not a deadlock: the runtime lets it wait
	os.Exit(102)
}

func TestNotifierAppLimitAndInFlight(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		_ = json.NewDecoder(r.Body).Decode(&n)
		arrived <- n.Group.Title
		<-release
	}))
	defer srv.Close()

	clock := &fakeClock{t: t0}
	n := NewNotifier(NotifierOptions{Now: clock.Now, AppLimit: 3, AppWindow: time.Minute, MaxInFlight: 2})
	var started []bool
	for _, w := range []string{"a", "b", "c"} {
		started = append(started, n.Notify(srv.URL, group("api", w), true, exitRec(1)))
	}
	// Two in flight: the third waits for nothing, it is dropped and counted.
	if fmt.Sprint(started) != "[true true false]" {
		t.Fatalf("started %v with 2 in flight allowed", started)
	}
	waitFor(t, arrived, "a request")
	waitFor(t, arrived, "a request")
	close(release)
	n.Close()

	// The app limit: 3 a minute, whatever the groups.
	n = NewNotifier(NotifierOptions{Now: clock.Now, AppLimit: 3, AppWindow: time.Minute})
	defer n.Close()
	started = nil
	for _, w := range []string{"d", "e", "f", "g", "h"} {
		started = append(started, n.Notify("true", group("api", w), true, exitRec(1)))
		clock.Advance(time.Second)
	}
	if !n.Notify("true", group("web", "d"), true, exitRec(1)) {
		t.Error("another app's crash was held back by api's limit")
	}
	if fmt.Sprint(started) != "[true true true false false]" {
		t.Fatalf("started %v with a limit of 3 a minute", started)
	}
	clock.Advance(time.Minute)
	// "g" was never notified: its next crash is, with the one it missed.
	if !n.Notify("true", group("api", "g"), false, exitRec(1)) {
		t.Error("a held-back group was not notified once the window passed")
	}
	if n.Notify("true", group("api", "g"), false, exitRec(1)) {
		t.Error("a repeat right after was notified")
	}
}
