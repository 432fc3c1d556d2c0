package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Stamp is one datagram of the probe app (bench/core/stamp): which process
// started, and when it reached main (CLOCK_REALTIME, read in the app).
type Stamp struct {
	PID int
	At  time.Time
}

// ParseStamp parses "<pid> <unix nanoseconds>".
func ParseStamp(b []byte) (Stamp, error) {
	pid, ns, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	p, err1 := strconv.Atoi(pid)
	n, err2 := strconv.ParseInt(ns, 10, 64)
	if !ok || err1 != nil || err2 != nil || p <= 0 || n <= 0 {
		return Stamp{}, fmt.Errorf("bad stamp %q", b)
	}
	return Stamp{PID: p, At: time.Unix(0, n)}, nil
}

// Stamps receives the probe app's datagrams on a loopback UDP port.
type Stamps struct {
	conn *net.UDPConn
	c    chan Stamp
	done chan struct{}
}

// ListenStamps listens on 127.0.0.1 at a free port.
func ListenStamps() (*Stamps, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s := &Stamps{conn: conn, c: make(chan Stamp, 4096), done: make(chan struct{})}
	go s.read()
	return s, nil
}

func (s *Stamps) read() {
	defer close(s.done)
	buf := make([]byte, 256)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return // closed
		}
		if st, err := ParseStamp(buf[:n]); err == nil {
			select {
			case s.c <- st:
			default: // nobody reads this many; never happens in a bounded run
			}
		}
	}
}

// Addr is the "127.0.0.1:port" to give the probe app.
func (s *Stamps) Addr() string { return s.conn.LocalAddr().String() }

// Close stops listening.
func (s *Stamps) Close() {
	s.conn.Close()
	<-s.done
}

// Drain discards the stamps received so far.
func (s *Stamps) Drain() {
	for {
		select {
		case <-s.c:
		default:
			return
		}
	}
}

// Next waits up to timeout for the next stamp that match accepts (nil:
// any), discarding others.
func (s *Stamps) Next(ctx context.Context, timeout time.Duration, match func(Stamp) bool) (Stamp, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case st := <-s.c:
			if match == nil || match(st) {
				return st, nil
			}
		case <-t.C:
			return Stamp{}, errors.New("no stamp from the probe app within " + timeout.String())
		case <-ctx.Done():
			return Stamp{}, ctx.Err()
		}
	}
}
