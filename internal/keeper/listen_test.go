package keeper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/nodeipc"
	"github.com/keel-run/keel/internal/proc"
	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

// localSocket is a listening socket on 127.0.0.1, as keel opens them.
func localSocket(t *testing.T) *sockets.Listener {
	t.Helper()
	l, err := sockets.Listen(sockets.Addr{Network: sockets.TCP, Host: "127.0.0.1"}, sockets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// inode identifies the socket behind f.
func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) })
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// servedBy asks the HTTP server on l for its pid.
func servedBy(t *testing.T, l *sockets.Listener) string {
	t.Helper()
	c := &http.Client{Timeout: eventTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + l.LocalAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

type listenCall struct {
	app string
	req ListenRequest
}

// A cluster-mode listen goes from the app through its keeper to the
// daemon's ListenFor, and the socket comes back to the app.
func TestListenThroughTheDaemon(t *testing.T) {
	h := newHarness(t)
	l := localSocket(t)
	calls := make(chan listenCall, 4)
	s := h.spawnerWith(SpawnerConfig{ListenFor: func(app string, _ int, req ListenRequest) (*os.File, string, error) {
		calls <- listenCall{app, req}
		return l.File(), "cluster-tcp-3000", nil
	}})
	a := app("ask-listen", "3000")
	a.Ready = spec.ReadyMessage
	p := h.spawn(s, a, 0)
	waitFor(t, p, supervisor.EventReady)
	c := <-calls
	if c.app != a.Name || c.req.Port != 3000 || c.req.ID < 1 {
		t.Fatalf("ListenFor(%q, %+v)", c.app, c.req)
	}
	if got, want := servedBy(t, l), fmt.Sprintf("pid %d", p.Pid()); got != want {
		t.Fatalf("served %q, want %q", got, want)
	}
	finish(t, p)
}

// A daemon's refusal reaches the app with its errno's name.
func TestListenErrorReachesTheApp(t *testing.T) {
	h := newHarness(t)
	s := h.spawnerWith(SpawnerConfig{ListenFor: func(string, int, ListenRequest) (*os.File, string, error) {
		return nil, "", fmt.Errorf("listen on :3000: %w", os.NewSyscallError("bind", syscall.EADDRINUSE))
	}})
	a := app("ask-listen", "3000")
	a.Ready = spec.ReadyMessage
	ex := release(t, h.spawn(s, a, 0))
	if ex.Code == nil || *ex.Code != 98 {
		t.Fatalf("exit %v, want 98 (the app saw EADDRINUSE)", ex)
	}
}

// A request made while no daemon is connected waits for the next daemon,
// which answers it on adopting the keeper.
func TestListenWaitsForADaemon(t *testing.T) {
	h := newHarness(t)
	fifo := filepath.Join(t.TempDir(), "go")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	s1 := h.spawnerWith(SpawnerConfig{NoStandby: true})
	a := app("ask-listen", "3000", fifo)
	a.Ready = spec.ReadyMessage
	p1 := h.spawn(s1, a, 0)
	s1.Close()

	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte{1})
	w.Close()
	// The keeper says in its log that it asks with no daemon connected.
	logPath := keeperLog(h.home, &p1.st)
	deadline := time.Now().Add(eventTimeout)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "asking the daemon for the app's socket") {
			if !strings.Contains(string(b), "daemons=0") {
				t.Fatalf("keeper log:\n%s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app never asked; keeper log:\n%s", b)
		}
		<-time.After(5 * time.Millisecond)
	}

	l := localSocket(t)
	calls := make(chan listenCall, 4)
	s2 := h.spawnerWith(SpawnerConfig{ListenFor: func(app string, _ int, req ListenRequest) (*os.File, string, error) {
		calls <- listenCall{app, req}
		return l.File(), "cluster-tcp-3000", nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	sv, err := s2.Survivors(ctx)
	if err != nil || len(sv) != 1 {
		t.Fatalf("Survivors: %v %+v", err, sv)
	}
	p2 := h.track(sv[0].Process.(*process))
	waitFor(t, p2, supervisor.EventReady)
	if c := <-calls; c.req.Port != 3000 {
		t.Fatalf("ListenFor(%q, %+v)", c.app, c.req)
	}
	if got, want := servedBy(t, l), fmt.Sprintf("pid %d", p2.Pid()); got != want {
		t.Fatalf("served %q, want %q", got, want)
	}
	finish(t, p2)
}

// An adopted keeper hands back its listening sockets — inherited and
// daemon-bound — also after its app exited, before Survivors returns.
func TestSurvivorsHandBackTheirSockets(t *testing.T) {
	h := newHarness(t)
	inherited, cluster := localSocket(t), localSocket(t)
	s1 := h.spawnerWith(SpawnerConfig{
		Listeners: func(*spec.App, int) ([]*os.File, []string, error) {
			return []*os.File{inherited.File()}, []string{"tcp-127.0.0.1-0"}, nil
		},
		ListenFor: func(string, int, ListenRequest) (*os.File, string, error) {
			return cluster.File(), "cluster-tcp-3000", nil
		},
	})
	a := app("ask-listen", "3000")
	a.Ready = spec.ReadyMessage
	p1 := h.spawn(s1, a, 0)
	waitFor(t, p1, supervisor.EventReady)
	s1.Close()
	// The app dies while no daemon is connected.
	syscall.Kill(p1.Pid(), syscall.SIGKILL)
	gone(t, proc.Identity{Pid: p1.st.Pid, Start: p1.st.PidStart})

	type handed struct {
		app  string
		sock Socket
	}
	var got []handed
	s2 := h.spawnerWith(SpawnerConfig{AdoptSockets: func(app string, socks []Socket) {
		for _, s := range socks {
			got = append(got, handed{app, s})
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	sv, err := s2.Survivors(ctx)
	if err != nil || len(sv) != 1 {
		t.Fatalf("Survivors: %v %+v", err, sv)
	}
	p2 := h.track(sv[0].Process.(*process))
	defer func() {
		for _, g := range got {
			g.sock.File.Close()
		}
	}()
	if len(got) != 2 {
		t.Fatalf("handed back %+v, want 2 sockets", got)
	}
	want := []struct {
		name, kind string
		ino        uint64
	}{
		{"tcp-127.0.0.1-0", SocketListen, inode(t, inherited.File())},
		{"cluster-tcp-3000", SocketCluster, inode(t, cluster.File())},
	}
	for i, w := range want {
		g := got[i]
		if g.app != a.Name || g.sock.Name != w.name || g.sock.Kind != w.kind || inode(t, g.sock.File) != w.ino {
			t.Errorf("socket %d: %s %+v (inode %d), want %+v", i, g.app, g.sock, inode(t, g.sock.File), w)
		}
	}
	ex := release(t, p2)
	if ex.Signal == nil || *ex.Signal != "SIGKILL" {
		t.Fatalf("exit %v", ex)
	}
}

func TestWireCarriesDescriptorsWithTheirLines(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	defer a.Close()
	defer b.Close()
	s1, s2, s3 := localSocket(t), localSocket(t), localSocket(t)
	writes := []struct {
		line  string
		files []*os.File
	}{
		{`{"n":1}` + "\n", nil},
		{`{"n":2,"fds":2}` + "\n", []*os.File{s1.File(), s2.File()}},
		{"\n", nil},
		{`{"n":3}` + "\n" + `{"n":4,"fds":1}` + "\n", []*os.File{s3.File()}},
	}
	for _, w := range writes {
		if err := writeWithFiles(a, []byte(w.line), w.files); err != nil {
			t.Fatal(err)
		}
	}
	r := newWireReader(b)
	defer r.close()
	wantFDs := map[string][]*os.File{`{"n":2,"fds":2}`: {s1.File(), s2.File()}, `{"n":4,"fds":1}`: {s3.File()}}
	for _, want := range []string{`{"n":1}`, `{"n":2,"fds":2}`, `{"n":3}`, `{"n":4,"fds":1}`} {
		line, err := r.next()
		if err != nil || string(line) != want {
			t.Fatalf("next = %q, %v; want %s", line, err, want)
		}
		files, err := r.take(len(wantFDs[want]))
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			if inode(t, f) != inode(t, wantFDs[want][i]) {
				t.Errorf("line %s: descriptor %d is another socket", want, i)
			}
			f.Close()
		}
	}
	// A line that announces a descriptor that did not come.
	if err := writeWithFiles(a, []byte(`{"fds":1}`+"\n"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.take(1); err == nil {
		t.Fatal("take of a descriptor that never came succeeded")
	}
	a.Close()
	if _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want EOF", err)
	}
}

// How the real Node channel answers listen(port), and how it runs node.
func TestNodeChannelAnswers(t *testing.T) {
	inherited := localSocket(t)
	clusterSock := localSocket(t)
	var asked []ListenRequest
	listenFor := func(ctx context.Context, req ListenRequest) (*os.File, error) {
		asked = append(asked, req)
		return clusterSock.File(), nil
	}
	open := func(a *spec.App, files []*os.File, names []string) *nodeChannel {
		t.Helper()
		a.Normalize()
		nc, err := OpenNodeChannel(NodeIPCRequest{App: a, Listeners: files, ListenNames: names, ListenFor: listenFor, RunDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close(); nc.Child().Close() })
		return nc.(*nodeChannel)
	}
	listenApp := open(&spec.App{Name: "a", Script: "s.js", Instances: 2, Listen: []string{"127.0.0.1:3000"}},
		[]*os.File{inherited.File()}, []string{"tcp-127.0.0.1-3000"})
	clusterApp := open(&spec.App{Name: "b", Script: "s.js", Instances: 2}, nil, nil)
	pm2Cluster := open(&spec.App{Name: "c", Script: "s.js", Cluster: true}, nil, nil)
	forkApp := open(&spec.App{Name: "d", Script: "s.js"}, nil, nil)
	lost := open(&spec.App{Name: "e", Script: "s.js", Listen: []string{":3000"}}, nil, nil)

	for _, tc := range []struct {
		name string
		c    *nodeChannel
		req  nodeipc.ListenRequest
		want *os.File
		err  bool
	}{
		{"a port in listen, any host", listenApp, nodeipc.ListenRequest{Port: 3000, Host: "0.0.0.0"}, inherited.File(), false},
		{"another port beside listen binds itself", listenApp, nodeipc.ListenRequest{Port: 4000}, nil, false},
		{"cluster mode asks the daemon", clusterApp, nodeipc.ListenRequest{Port: 4000, Host: "::1", Backlog: 7}, clusterSock.File(), false},
		{"cluster mode, port 0 too", clusterApp, nodeipc.ListenRequest{Port: 0}, clusterSock.File(), false},
		{"exclusive binds itself", clusterApp, nodeipc.ListenRequest{Port: 4000, Exclusive: true}, nil, false},
		{"cluster: true with one instance", pm2Cluster, nodeipc.ListenRequest{Port: 4000}, clusterSock.File(), false},
		{"one instance without listen asks the daemon too (scale, rolling reload)", forkApp, nodeipc.ListenRequest{Port: 4000}, clusterSock.File(), false},
		{"a listen socket that did not come", lost, nodeipc.ListenRequest{Port: 3000}, nil, true},
	} {
		asked = nil
		f, err := tc.c.listen(context.Background(), tc.req)
		if f != tc.want || (err != nil) != tc.err {
			t.Errorf("%s: listen(%+v) = %v, %v", tc.name, tc.req, f, err)
		}
		if f == clusterSock.File() {
			want := []ListenRequest{{Host: tc.req.Host, Port: tc.req.Port, Backlog: tc.req.Backlog}}
			if !slices.Equal(asked, want) {
				t.Errorf("%s: asked the daemon %+v, want %+v", tc.name, asked, want)
			}
		} else if len(asked) > 0 {
			t.Errorf("%s: asked the daemon %+v", tc.name, asked)
		}
	}

	// Node runs with the preload, before its own flags.
	argv, env := clusterApp.Prepare(5, []string{"node", "--max-old-space-size=64", "s.js", "x"})
	if len(argv) != 6 || argv[1] != "--require" || !strings.HasSuffix(argv[2], ".cjs") || argv[3] != "--max-old-space-size=64" || argv[4] != "s.js" {
		t.Fatalf("argv %q", argv)
	}
	if b, err := os.ReadFile(argv[2]); err != nil || string(b) != string(nodeipc.Preload()) {
		t.Fatalf("preload %s: %v", argv[2], err)
	}
	for _, kv := range []string{"NODE_CHANNEL_FD=5", "NODE_CHANNEL_SERIALIZATION_MODE=json", "KEEL_NODE_IPC=1", "KEEL_STOP_SIGNAL=SIGTERM"} {
		if !slices.Contains(env, kv) {
			t.Errorf("env %q lacks %s", env, kv)
		}
	}
	// Another program that wants the channel (ready: message) gets it
	// without the preload.
	py := open(&spec.App{Name: "f", Script: "s.py", Ready: spec.ReadyMessage}, nil, nil)
	if argv, _ := py.Prepare(3, []string{"python3", "s.py"}); !slices.Equal(argv, []string{"python3", "s.py"}) {
		t.Fatalf("argv %q", argv)
	}
}
