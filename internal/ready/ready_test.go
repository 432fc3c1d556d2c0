package ready_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/ready"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// boundSocket reserves a port on 127.0.0.1 without listening yet, so a
// dial is refused until listen is called.
func boundSocket(t *testing.T) (port int, listen func()) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*unix.SockaddrInet4).Port, func() {
		if err := unix.Listen(fd, 16); err != nil {
			t.Error(err)
		}
	}
}

func TestTCP(t *testing.T) {
	port, listen := boundSocket(t)
	target := "tcp://127.0.0.1:" + strconv.Itoa(port)
	p, err := ready.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(context.Background()); err == nil {
		t.Fatal("ready before listening")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, 5*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait before listening: %v, want deadline exceeded", err)
	}
	listen()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ready.Wait(ctx, target, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPNeedsA2xx(t *testing.T) {
	var hits, okAfter atomic.Int32
	okAfter.Store(3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case r.URL.Path != "/healthz":
			http.NotFound(w, r)
		case hits.Add(1) <= okAfter.Load():
			http.Error(w, "warming up", http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ready.Wait(ctx, srv.URL+"/healthz", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 4 {
		t.Fatalf("%d probes, want 4 (3 × 503, then 204)", n)
	}
	for _, path := range []string{"/moved", "/missing"} {
		p, err := ready.Parse(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Check(ctx); err == nil {
			t.Errorf("%s counted as ready", path)
		}
	}
}

func TestParse(t *testing.T) {
	for _, bad := range []string{"", "tcp://", "tcp://nohost", "http://", "udp://x:1", "notify"} {
		if _, err := ready.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	for _, good := range []string{"tcp://:3000", "tcp://[::1]:80", "http://127.0.0.1:8080", "http://localhost:1/x?y=z"} {
		if _, err := ready.Parse(good); err != nil {
			t.Errorf("Parse(%q): %v", good, err)
		}
	}
}
