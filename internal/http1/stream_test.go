package http1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// streamTicks streams "tick N\n" every few milliseconds until its context
// ends, then reports that on ended.
func streamTicks(ended chan<- error) Handler {
	return func(w *ResponseWriter, r *Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Stream(func(ctx context.Context, out io.Writer) error {
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(out, "tick %d\n", i); err != nil {
					ended <- err
					return err
				}
				select {
				case <-ctx.Done():
					ended <- ctx.Err()
					return nil
				case <-t.C:
				}
			}
		})
	}
}

func readStreamHead(t *testing.T, br *bufio.Reader) {
	t.Helper()
	var head []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the head: %v (so far %q)", err, head)
		}
		if line == "\r\n" {
			break
		}
		head = append(head, strings.TrimSpace(line))
	}
	h := strings.Join(head, "|")
	if head[0] != "HTTP/1.1 200 OK" || strings.Contains(h, "Content-Length") || !strings.Contains(h, "Connection: close") ||
		!strings.Contains(h, "Content-Type: text/event-stream") {
		t.Fatalf("stream head %q", h)
	}
}

func TestStreamUntilHangUp(t *testing.T) {
	ended := make(chan error, 1)
	r := start(t, &Server{Handler: streamTicks(ended)})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	readStreamHead(t, br)
	for i := 0; i < 3; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("tick %d\n", i) {
			t.Fatalf("line %d: %q, %v", i, line, err)
		}
	}
	c.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream went on after the client hung up")
	}
}

func TestStreamEndsOnShutdown(t *testing.T) {
	ended := make(chan error, 1)
	srv := &Server{Handler: streamTicks(ended)}
	r := start(t, srv)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	readStreamHead(t, br)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a stream open: %v", err)
	}
	<-ended
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
}
