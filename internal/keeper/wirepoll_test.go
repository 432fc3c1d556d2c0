package keeper

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// One wirePoller accepts on several sockets and reads every connection's
// lines, with their descriptors, in order, with no goroutine per socket
// or connection; a connection ends when its peer closes it or when it is
// removed.
func TestWirePollerAcceptsAndReads(t *testing.T) {
	w, err := newWirePoller()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	type got struct {
		sock, line string
		fds        int
	}
	lines := make(chan got, 100)
	ends := make(chan string, 10)
	conns := make(chan *net.UnixConn, 10) // the write ends the accepts made
	var reads []*wireEntry
	readsC := make(chan *wireEntry, 10)

	const socks = 5
	dir := t.TempDir()
	before := runtime.NumGoroutine()
	for i := range socks {
		ln, err := listenUnix(filepath.Join(dir, fmt.Sprintf("%d.sock", i)))
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprint(i)
		_, err = w.listen(ln, func(fd int) {
			c, err := connForWrites(fd)
			if err != nil {
				t.Error(err)
				unix.Close(fd)
				return
			}
			conns <- c
			e, err := w.read(fd, nil, func(line []byte, r *wireReader) bool {
				n := 0
				if line[0] == 'd' { // as "fds":1 would say
					n = 1
				}
				files, err := r.take(n)
				closeFiles(files)
				lines <- got{name, string(line), len(files)}
				return err == nil
			}, func(error) { ends <- name })
			if err != nil {
				t.Error(err)
			}
			readsC <- e
		})
		ln.Close() // the poller's duplicate listens on
		if err != nil {
			t.Fatal(err)
		}
	}
	if extra := runtime.NumGoroutine() - before; extra >= socks {
		t.Errorf("%d goroutines more for %d sockets", extra, socks)
	}

	var peers []*net.UnixConn
	for i := range socks {
		c, err := dialUnix(filepath.Join(dir, fmt.Sprintf("%d.sock", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peers = append(peers, c)
		defer (<-conns).Close()
		reads = append(reads, <-readsC)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, c := range peers {
		// Two lines in one write, one line split over two writes, one
		// with a descriptor.
		mustWrite(t, c, fmt.Sprintf("a%d\nb%d\nc", i, i))
		mustWrite(t, c, fmt.Sprintf("%d\n", i))
		if err := writeWithFiles(c, []byte(fmt.Sprintf("d%d\n", i)), []*os.File{f}); err != nil {
			t.Fatal(err)
		}
	}
	next := map[string]int{}
	for range 4 * socks {
		select {
		case g := <-lines:
			i := next[g.sock]
			next[g.sock]++
			want := fmt.Sprintf("%c%s", "abcd"[i], g.sock)
			if g.line != want || g.fds != map[bool]int{true: 1}[i == 3] {
				t.Fatalf("socket %s: line %d is %q with %d fds, want %q", g.sock, i, g.line, g.fds, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("lines missing; got %v", next)
		}
	}

	// A peer that closes ends its entry; a removed entry ends and its
	// peer reads EOF.
	peers[0].Close()
	w.remove(reads[1])
	seen := map[string]bool{}
	for range 2 {
		select {
		case name := <-ends:
			seen[name] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("ends missing: %v", seen)
		}
	}
	if !seen["0"] || !seen["1"] {
		t.Fatalf("ended %v, want 0 and 1", seen)
	}
	// The keeper's write end (an accepted conn) is still open here, so
	// only the poller's close cannot make EOF; the test closes both.
}

func mustWrite(t *testing.T, c *net.UnixConn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}
