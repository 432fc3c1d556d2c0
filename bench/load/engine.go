package load

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The client runs like wrk: a few event loops, each on an OS thread of its
// own with its own epoll set and its share of the connections, on raw
// non-blocking sockets. A goroutine per connection on Go's netpoller costs
// about a third more CPU per request, and on a small machine shared with
// the servers under test that CPU, and where the scheduler puts it, decides
// how much each server gets (see bench/README.md).

// connection states.
type connState int

const (
	stIdle       connState = iota // between requests (transient)
	stConnecting                  // connect in progress
	stSending                     // request partly written
	stReading                     // waiting for (the rest of) the response
	stBackoff                     // waiting Backoff after a failed dial
	stDone                        // no more requests
)

const readBuf = 16 << 10

type conn struct {
	idx   int32
	gen   int32 // bumped with every new socket; stale epoll events are dropped
	fd    int
	state connState
	mask  uint32 // events registered with epoll; 0: not registered

	deadline time.Time // of the dial or the request in progress
	wakeAt   time.Time // end of a backoff
	began    time.Time // the request was sent
	sent     int
	fresh    bool // no OK answer on this connection yet
	received bool // some of the response arrived
	special  int  // the request in progress: 0 to the URL, i+1 to Config.Specials[i]

	buf  []byte
	r, w int // unread bytes are buf[r:w]
	resp response
}

// loop is one event loop. Only its own goroutine touches it.
type loop struct {
	cfg    *Config
	sa     unix.Sockaddr
	family int
	reqs   [][]byte // the request to the URL, then one per Config.Specials
	sent   int      // requests started, for picking the specials
	epfd   int
	wakeFd int // eventfd, readable once the run is cancelled
	conns  []*conn
	live   int // connections not done
	t      *tally
	start  time.Time
	end    time.Time
	issued *atomic.Int64

	cancelled bool
	nextWake  time.Time // earliest deadline or backoff end to look at
}

var farFuture = time.Unix(math.MaxInt32, 0)

func newLoop(cfg *Config, addr *net.TCPAddr, reqs [][]byte, wakeFd, conns int, start, end time.Time, issued *atomic.Int64) (*loop, error) {
	sa, family, err := sockaddr(addr)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("load: %w", os.NewSyscallError("epoll_create1", err))
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakeFd, &ev); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("load: %w", os.NewSyscallError("epoll_ctl", err))
	}
	l := &loop{
		cfg: cfg, sa: sa, family: family, reqs: reqs, epfd: epfd, wakeFd: wakeFd,
		t:     &tally{instances: map[string]int64{}, connInst: map[string]int64{}},
		start: start, end: end, issued: issued, nextWake: farFuture,
	}
	for i := 0; i < conns; i++ {
		c := &conn{idx: int32(i), fd: -1, buf: make([]byte, readBuf)}
		c.resp.header = []byte(cfg.InstanceHeader)
		c.resp.fromBody = cfg.InstanceFromBody
		l.conns = append(l.conns, c)
	}
	for _, s := range cfg.Specials {
		l.t.specials = append(l.t.specials, SpecialResult{Path: s.Path, Status: map[int]int64{}, Failed: map[string]int64{}})
	}
	l.live = conns
	return l, nil
}

// pick says where the loop's next request (number n, from 1) goes: 0 to
// the URL, i+1 to special i if n ≡ 1 + i·Every/len(Specials) (mod its
// Every), the first special that matches: specials of one Every are spread
// evenly over its cycle, not sent back to back.
func (l *loop) pick() int {
	l.sent++
	for i, s := range l.cfg.Specials {
		if l.sent%s.Every == (1+i*s.Every/len(l.cfg.Specials))%s.Every {
			return i + 1
		}
	}
	return 0
}

func (l *loop) run() {
	// The loop blocks in epoll_wait; a thread of its own keeps the Go
	// scheduler out of the way, as wrk's threads are.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer l.closeAll()

	now := time.Now()
	for _, c := range l.conns {
		l.next(c, now)
	}
	events := make([]unix.EpollEvent, len(l.conns)+1)
	for l.live > 0 {
		now = time.Now()
		if l.over(now) {
			return
		}
		if !now.Before(l.nextWake) {
			l.expire(now)
			continue
		}
		wait := l.nextWake
		if !l.end.IsZero() && l.end.Before(wait) {
			wait = l.end
		}
		ms := int((wait.Sub(now) + time.Millisecond - 1) / time.Millisecond)
		ms = min(max(ms, 0), 1000)
		n, err := unix.EpollWait(l.epfd, events, ms)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.t.fail(l.start, Other, os.NewSyscallError("epoll_wait", err))
			return
		}
		now = time.Now()
		for _, ev := range events[:n] {
			if ev.Fd < 0 {
				l.cancelled = true
				return
			}
			c := l.conns[ev.Fd]
			if ev.Pad != c.gen {
				continue // for a socket closed since
			}
			l.ready(c, ev.Events, now)
		}
	}
}

// over reports whether the run has ended (cancelled, or its time is up).
func (l *loop) over(now time.Time) bool {
	return l.cancelled || (!l.end.IsZero() && !now.Before(l.end))
}

func (l *loop) closeAll() {
	for _, c := range l.conns {
		l.closeConn(c)
	}
	unix.Close(l.epfd)
}

// wakeBy makes sure the loop looks at the connections again by t.
func (l *loop) wakeBy(t time.Time) {
	if t.Before(l.nextWake) {
		l.nextWake = t
	}
}

// expire times out dials and requests past their deadline and ends
// backoffs that are over.
func (l *loop) expire(now time.Time) {
	l.nextWake = farFuture
	for _, c := range l.conns {
		switch c.state {
		case stBackoff:
			if !now.Before(c.wakeAt) {
				l.next(c, now)
			} else {
				l.wakeBy(c.wakeAt)
			}
		case stConnecting, stSending, stReading:
			if !now.Before(c.deadline) {
				l.fail(c, Timeout, os.ErrDeadlineExceeded, now)
			} else {
				l.wakeBy(c.deadline)
			}
		}
	}
}

// next starts the connection's next request, dialling first if needed.
func (l *loop) next(c *conn, now time.Time) {
	if l.over(now) || (l.cfg.MaxRequests > 0 && l.issued.Add(1) > l.cfg.MaxRequests) {
		l.closeConn(c)
		c.state = stDone
		l.live--
		return
	}
	c.special = 0 // a failed dial counts against the URL
	if c.fd < 0 {
		l.dial(c, now)
		return
	}
	l.send(c, now)
}

func (l *loop) dial(c *conn, now time.Time) {
	fd, err := unix.Socket(l.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		l.dialFailed(c, os.NewSyscallError("socket", err), now)
		return
	}
	// As Go's net package does by default.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c.fd, c.gen, c.mask, c.r, c.w = fd, c.gen+1, 0, 0, 0
	err = unix.Connect(fd, l.sa)
	switch {
	case err == nil:
		l.connected(c, now)
	case errors.Is(err, unix.EINPROGRESS):
		c.state = stConnecting
		c.deadline = now.Add(l.cfg.Timeout)
		l.wakeBy(c.deadline)
		l.want(c, unix.EPOLLOUT, now)
	default:
		l.closeConn(c)
		l.dialFailed(c, os.NewSyscallError("connect", err), now)
	}
}

// dialFailed counts a failed dial and backs off before the next one, so a
// dead port costs a few hundred attempts a second, not a spinning CPU.
func (l *loop) dialFailed(c *conn, err error, now time.Time) {
	l.t.fail(l.start, classify(err), err)
	if l.cfg.onBackoff != nil {
		l.cfg.onBackoff(l.cfg.Backoff)
	}
	c.state = stBackoff
	c.wakeAt = now.Add(l.cfg.Backoff)
	l.wakeBy(c.wakeAt)
}

func (l *loop) connected(c *conn, now time.Time) {
	l.t.conns++
	c.fresh = true
	l.send(c, now)
}

func (l *loop) send(c *conn, now time.Time) {
	c.began = now
	c.deadline = now.Add(l.cfg.Timeout)
	l.wakeBy(c.deadline)
	c.sent, c.received = 0, false
	c.special = l.pick()
	c.resp.reset()
	l.write(c, now)
}

func (l *loop) write(c *conn, now time.Time) {
	req := l.reqs[c.special]
	for c.sent < len(req) {
		n, err := unix.Write(c.fd, req[c.sent:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				c.state = stSending
				l.want(c, unix.EPOLLOUT, now)
				return
			}
			l.fail(c, classify(err), os.NewSyscallError("write", err), now)
			return
		}
		c.sent += n
	}
	c.state = stReading
	l.want(c, unix.EPOLLIN, now)
	// Bytes that came ahead of this response (a server answering more than
	// it was asked) are read as the start of it.
	if c.r < c.w {
		l.parse(c, now)
	}
}

// want registers the connection's socket for events, if not already.
func (l *loop) want(c *conn, events uint32, now time.Time) {
	if c.mask == events {
		return
	}
	op := unix.EPOLL_CTL_MOD
	if c.mask == 0 {
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: events, Fd: c.idx, Pad: c.gen}
	if err := unix.EpollCtl(l.epfd, op, c.fd, &ev); err != nil {
		l.fail(c, Other, os.NewSyscallError("epoll_ctl", err), now)
		return
	}
	c.mask = events
}

// ready handles events on the connection's socket.
func (l *loop) ready(c *conn, events uint32, now time.Time) {
	switch c.state {
	case stConnecting:
		soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soErr != 0 {
			err = syscall.Errno(soErr)
		}
		if err != nil {
			l.closeConn(c)
			l.dialFailed(c, os.NewSyscallError("connect", err), now)
			return
		}
		if events&unix.EPOLLOUT != 0 {
			l.connected(c, now)
		}
	case stSending:
		l.write(c, now)
	case stReading:
		l.read(c, now)
	}
}

func (l *loop) read(c *conn, now time.Time) {
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if len(c.buf)-c.w < readBuf/4 && c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.buf) {
		if len(c.buf) >= 2*maxHead {
			l.fail(c, Other, fmt.Errorf("%w: a line longer than %d bytes", errMalformed, maxHead), now)
			return
		}
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	n, err := unix.Read(c.fd, c.buf[c.w:])
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		l.fail(c, classify(err), os.NewSyscallError("read", err), now)
		return
	}
	if n == 0 {
		done, err := c.resp.eof(c.received)
		if err != nil {
			l.fail(c, classify(err), err, now)
			return
		}
		if done {
			l.complete(c)
		}
		return
	}
	c.received = true
	c.w += n
	l.parse(c, now)
}

// parse feeds the unread bytes to the response and completes it if it is
// whole.
func (l *loop) parse(c *conn, now time.Time) {
	n, done, err := c.resp.feed(c.buf[c.r:c.w])
	c.r += n
	if err != nil {
		l.fail(c, Other, err, now)
		return
	}
	if done {
		l.complete(c)
	}
}

// complete counts a whole response and goes on to the next request.
func (l *loop) complete(c *conn) {
	now := time.Now()
	p := &c.resp
	if c.special > 0 {
		s := &l.t.specials[c.special-1]
		s.Requests++
		s.Status[p.status]++
	} else if p.status < 200 || p.status > 299 {
		l.t.fail(l.start, Status, fmt.Errorf("status %s", p.statusLine))
	} else {
		id := p.instance()
		l.t.ok++
		l.t.hist.add(now.Sub(c.began))
		l.t.instances[id]++
		if c.fresh {
			c.fresh = false
			l.t.connInst[id]++
		}
		l.t.tick(l.start, true)
	}
	if p.close {
		l.closeConn(c)
	}
	c.state = stIdle
	l.next(c, now)
}

// fail counts a failed request, drops the connection and starts the next
// request on a new one.
func (l *loop) fail(c *conn, k Kind, err error, now time.Time) {
	if c.special > 0 {
		s := &l.t.specials[c.special-1]
		s.Requests++
		s.Failed[k.String()]++
	} else {
		l.t.fail(l.start, k, err)
	}
	l.closeConn(c)
	// From the loop, not from here: a server that fails every request at
	// once must not recurse.
	c.state, c.wakeAt = stBackoff, now
	l.wakeBy(now)
}

func (l *loop) closeConn(c *conn) {
	if c.fd >= 0 {
		unix.Close(c.fd) // also leaves the epoll set
		c.fd, c.mask = -1, 0
		c.gen++
	}
	c.r, c.w = 0, 0
}

// sockaddr is what to connect to for a. Each loop needs its own:
// unix.Connect writes into it.
func sockaddr(a *net.TCPAddr) (unix.Sockaddr, int, error) {
	if ip4 := a.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: a.Port}
		copy(sa.Addr[:], ip4)
		return sa, unix.AF_INET, nil
	}
	sa := &unix.SockaddrInet6{Port: a.Port}
	copy(sa.Addr[:], a.IP.To16())
	if a.Zone != "" {
		ifi, err := net.InterfaceByName(a.Zone)
		if err != nil {
			return nil, 0, err
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return sa, unix.AF_INET6, nil
}
