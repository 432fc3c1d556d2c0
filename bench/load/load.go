// Package load is keel's HTTP load client for benchmarks: N keep-alive
// connections sending GET requests back to back for a bounded time, with
// every failed request counted by kind, latency percentiles, and the share
// of requests each instance served.
//
// It speaks HTTP/1.1 on raw non-blocking sockets from a few epoll loops,
// each on an OS thread of its own, as wrk does (no connection pool, no
// retries), so that every failure is seen and counted exactly once and
// the client takes as little CPU as it can from the servers it measures:
//
//   - refused: the connection was refused (no listener). The connection waits
//     Backoff before dialling again, so a dead port costs a few hundred
//     attempts a second, not a spinning CPU.
//   - reset: the connection was reset (RST) while sending or waiting.
//   - closed: the server closed the connection before a complete response
//     (EOF), e.g. a kept-alive connection closed under a request.
//   - timeout: no complete response within Timeout.
//   - status: a complete response whose status is not 2xx.
//   - other: anything else (a malformed response, a dial error that is
//     neither refused nor reset).
//
// A request cut short because the run ended is not counted at all.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is a kind of failed request.
type Kind int

// The kinds of failure, in the order reports list them.
const (
	Refused Kind = iota
	Reset
	Closed
	Timeout
	Status
	Other
	numKinds
)

var kindNames = [numKinds]string{"refused", "reset", "closed", "timeout", "status", "other"}

func (k Kind) String() string {
	if k >= 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Kinds lists every kind of failure.
func Kinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// Config says what to run. URL and one of Duration or MaxRequests are
// required; the rest have defaults.
type Config struct {
	// URL is an http:// URL; every request is a GET of it.
	URL string
	// Conns is the number of concurrent connections (default 32).
	Conns int
	// Duration bounds the run (default: unbounded if MaxRequests is set).
	Duration time.Duration
	// MaxRequests stops the run after this many requests in all (0: no
	// limit). Refused connection attempts count as requests.
	MaxRequests int64
	// Timeout bounds each request, dial included (default 5s).
	Timeout time.Duration
	// Backoff is the wait after a refused connection (default 10ms).
	Backoff time.Duration
	// InstanceHeader is the response header naming the instance that
	// served the request (default "X-Keel-Instance").
	InstanceHeader string
	// InstanceFromBody takes the instance from the body (trimmed, up to 64
	// bytes) when the header is absent.
	InstanceFromBody bool

	// Close asks for a new connection per request ("Connection: close").
	Close bool
	// Specials send some requests to other paths of the same server: in
	// each event loop, request n goes to special i if n ≡ 1 +
	// i·Every/len(Specials) (mod its Every), the first that matches. Their outcomes are counted apart, in
	// Result.Specials, and nowhere else.
	Specials []Special
	// Threads is the number of event loops, each on an OS thread of its
	// own (default GOMAXPROCS, at most Conns).
	Threads int

	// onBackoff, for tests, sees every backoff as it begins.
	onBackoff func(d time.Duration)
}

// Special is a path that one request in Every goes to.
type Special struct {
	Path  string // "/throw"
	Every int    // at least 2
}

// SpecialResult is what the requests to one Special's path got.
type SpecialResult struct {
	Path     string `json:"path"`
	Requests int64  `json:"requests"`
	// Status counts complete responses by status code (2xx included).
	Status map[int]int64 `json:"status"`
	// Failed counts the requests that got no complete response, by kind
	// ("reset", "closed", …; "status" is never used here).
	Failed map[string]int64 `json:"failed"`
}

// Tick is one second of the run.
type Tick struct {
	OK     int64 `json:"ok"`
	Failed int64 `json:"failed"`
}

// Result is what a run measured.
type Result struct {
	// Requests = OK + every failure.
	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// Failed counts failed requests by kind name ("refused", …); every
	// kind is present.
	Failed map[string]int64 `json:"failed"`
	// Errors holds the first error message seen for each kind that occurred.
	Errors map[string]string `json:"errors,omitempty"`
	// Connections is the number of connections opened.
	Connections int64         `json:"connections"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	// RPS is OK responses per second.
	RPS float64       `json:"rps"`
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
	// Instances counts OK responses by instance id; requests without an
	// id count under "".
	Instances map[string]int64 `json:"instances"`
	// ConnInstances counts connections by the instance that answered their
	// first OK request: with keep-alive, how the connections were spread
	// when they were accepted.
	ConnInstances map[string]int64 `json:"conn_instances"`
	// PerSecond is the run second by second.
	PerSecond []Tick `json:"per_second"`
	// Specials are Config.Specials' outcomes, in its order.
	Specials []SpecialResult `json:"specials,omitempty"`
}

// Failures is the number of failed requests of every kind.
func (r *Result) Failures() int64 {
	var n int64
	for _, c := range r.Failed {
		n += c
	}
	return n
}

// Share is the fraction of OK responses served by instance id.
func (r *Result) Share(id string) float64 {
	if r.OK == 0 {
		return 0
	}
	return float64(r.Instances[id]) / float64(r.OK)
}

// String is a human summary, several lines.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests in %.2fs: %d ok, %d failed; %.0f req/s\n",
		r.Requests, r.Elapsed.Seconds(), r.OK, r.Failures(), r.RPS)
	fmt.Fprintf(&b, "latency p50 %v  p90 %v  p99 %v  max %v\n", r.P50, r.P90, r.P99, r.Max)
	fmt.Fprintf(&b, "failed:")
	for _, k := range Kinds() {
		fmt.Fprintf(&b, " %s %d", k, r.Failed[k.String()])
	}
	fmt.Fprintf(&b, "; connections opened %d\n", r.Connections)
	ids := make([]string, 0, len(r.Instances))
	for id := range r.Instances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		name := id
		if name == "" {
			name = "(no id)"
		}
		fmt.Fprintf(&b, "instance %-12s %8d  %5.1f%%\n", name, r.Instances[id], 100*r.Share(id))
	}
	for _, k := range Kinds() {
		if e, ok := r.Errors[k.String()]; ok {
			fmt.Fprintf(&b, "first %s: %s\n", k, e)
		}
	}
	return b.String()
}

// tally is one event loop's counts, merged at the end.
type tally struct {
	ok        int64
	failed    [numKinds]int64
	errs      [numKinds]string
	conns     int64
	hist      histogram
	instances map[string]int64
	connInst  map[string]int64 // connections by their first answer's instance
	ticks     []Tick
	specials  []SpecialResult
}

func (t *tally) tick(start time.Time, ok bool) {
	s := int(time.Since(start) / time.Second)
	for len(t.ticks) <= s {
		t.ticks = append(t.ticks, Tick{})
	}
	if ok {
		t.ticks[s].OK++
	} else {
		t.ticks[s].Failed++
	}
}

func (t *tally) fail(start time.Time, k Kind, err error) {
	t.failed[k]++
	if t.errs[k] == "" {
		if err != nil {
			t.errs[k] = err.Error()
		} else {
			t.errs[k] = k.String()
		}
	}
	t.tick(start, false)
}

// Run runs the load described by cfg until Duration has passed,
// MaxRequests were sent, or ctx is done, and returns what it measured. It
// returns an error only for a bad Config. It opens every connection itself
// and closes all of them before it returns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("load: url: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("load: url %q: want http://host:port/path", cfg.URL)
	}
	if cfg.Duration <= 0 && cfg.MaxRequests <= 0 {
		return nil, errors.New("load: set Duration or MaxRequests, so the run is bounded")
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 32
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 10 * time.Millisecond
	}
	if cfg.InstanceHeader == "" {
		cfg.InstanceHeader = "X-Keel-Instance"
	}
	if cfg.Threads <= 0 {
		cfg.Threads = runtime.GOMAXPROCS(0)
	}
	for _, s := range cfg.Specials {
		if s.Every < 2 || !strings.HasPrefix(s.Path, "/") {
			return nil, fmt.Errorf("load: special %+v: want a path from / and Every of at least 2", s)
		}
	}
	cfg.Threads = min(cfg.Threads, cfg.Conns)
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	tcpAddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	path := u.RequestURI()
	head := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: keel-load\r\n"
	if cfg.Close {
		head += "Connection: close\r\n"
	}
	rawReq := []byte(head + "\r\n")
	reqs := [][]byte{rawReq}
	for _, s := range cfg.Specials {
		reqs = append(reqs, []byte(strings.Replace(head, " "+path+" ", " "+s.Path+" ", 1)+"\r\n"))
	}

	start := time.Now()
	var end time.Time // zero: no time limit
	if cfg.Duration > 0 {
		end = start.Add(cfg.Duration)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end)
		defer cancel()
	}
	// Readable once the run is cancelled: it wakes every loop.
	wakeFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("load: %w", os.NewSyscallError("eventfd", err))
	}
	defer unix.Close(wakeFd)
	var issued atomic.Int64
	loops := make([]*loop, cfg.Threads)
	for i := range loops {
		n := cfg.Conns / cfg.Threads
		if i < cfg.Conns%cfg.Threads {
			n++
		}
		l, err := newLoop(&cfg, tcpAddr, reqs, wakeFd, n, start, end, &issued)
		if err != nil {
			for _, l := range loops[:i] {
				unix.Close(l.epfd)
			}
			return nil, err
		}
		loops[i] = l
	}
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		unix.Write(wakeFd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	})
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run()
		}()
	}
	wg.Wait()
	if !stop() {
		<-woken // the write is done before the eventfd is closed
	}
	elapsed := time.Since(start)

	r := &Result{Failed: map[string]int64{}, Instances: map[string]int64{}, ConnInstances: map[string]int64{}, Elapsed: elapsed}
	for _, s := range cfg.Specials {
		r.Specials = append(r.Specials, SpecialResult{Path: s.Path, Status: map[int]int64{}, Failed: map[string]int64{}})
	}
	var h histogram
	for _, l := range loops {
		t := l.t
		r.OK += t.ok
		r.Connections += t.conns
		for k, n := range t.failed {
			r.Failed[Kind(k).String()] += n
			if n > 0 && t.errs[k] != "" {
				if r.Errors == nil {
					r.Errors = map[string]string{}
				}
				if _, ok := r.Errors[Kind(k).String()]; !ok {
					r.Errors[Kind(k).String()] = t.errs[k]
				}
			}
		}
		for id, n := range t.instances {
			r.Instances[id] += n
		}
		for id, n := range t.connInst {
			r.ConnInstances[id] += n
		}
		for s, tk := range t.ticks {
			for len(r.PerSecond) <= s {
				r.PerSecond = append(r.PerSecond, Tick{})
			}
			r.PerSecond[s].OK += tk.OK
			r.PerSecond[s].Failed += tk.Failed
		}
		h.merge(&t.hist)
		for i, s := range t.specials {
			rs := &r.Specials[i]
			rs.Requests += s.Requests
			for code, n := range s.Status {
				rs.Status[code] += n
			}
			for k, n := range s.Failed {
				rs.Failed[k] += n
			}
		}
	}
	for _, k := range Kinds() {
		r.Failed[k.String()] += 0
	}
	r.Requests = r.OK + r.Failures()
	if elapsed > 0 {
		r.RPS = float64(r.OK) / elapsed.Seconds()
	}
	r.P50, r.P90, r.P99, r.Max = h.quantile(0.50), h.quantile(0.90), h.quantile(0.99), h.max
	return r, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// classify names the kind of a failed request's error.
func classify(err error) Kind {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return Reset
	case isTimeout(err):
		return Timeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Closed
	}
	return Other
}
