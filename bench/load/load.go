// Package load is keel's HTTP load client for benchmarks: N keep-alive
// connections sending GET requests back to back for a bounded time, with
// every failed request counted by kind, latency percentiles, and the share
// of requests each instance served.
//
// It speaks HTTP/1.1 on raw connections (no connection pool, no retries)
// so that every failure is seen and counted exactly once:
//
//   - refused: the connection was refused (no listener). The worker waits
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
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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

	// wait replaces the backoff sleep in tests; it returns false when the
	// run is over.
	wait func(ctx context.Context, d time.Duration) bool
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

// worker's tallies, merged at the end.
type tally struct {
	ok        int64
	failed    [numKinds]int64
	errs      [numKinds]string
	conns     int64
	hist      histogram
	instances map[string]int64
	connInst  map[string]int64 // connections by their first answer's instance
	ticks     []Tick
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
	if cfg.wait == nil {
		cfg.wait = sleep
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.RequestURI()
	rawReq := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: keel-load\r\n\r\n")
	req, err := http.NewRequest(http.MethodGet, cfg.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}

	start := time.Now()
	var end time.Time // zero: no time limit
	if cfg.Duration > 0 {
		end = start.Add(cfg.Duration)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end)
		defer cancel()
	}
	var issued atomic.Int64
	tallies := make([]*tally, cfg.Conns)
	var wg sync.WaitGroup
	for i := range tallies {
		t := &tally{instances: map[string]int64{}, connInst: map[string]int64{}}
		tallies[i] = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{cfg: &cfg, addr: addr, rawReq: rawReq, req: req, t: t, start: start, end: end, issued: &issued}
			w.run(ctx)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	r := &Result{Failed: map[string]int64{}, Instances: map[string]int64{}, ConnInstances: map[string]int64{}, Elapsed: elapsed}
	var h histogram
	for _, t := range tallies {
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

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type worker struct {
	cfg    *Config
	addr   string
	rawReq []byte
	req    *http.Request
	t      *tally
	start  time.Time
	end    time.Time
	issued *atomic.Int64

	conn  net.Conn
	fresh bool // no OK answer on conn yet
	br    *bufio.Reader
	stop  func() bool // ends the AfterFunc that interrupts conn on ctx
}

func (w *worker) closeConn() {
	if w.conn != nil {
		w.stop()
		w.conn.Close()
		w.conn = nil
	}
}

// over reports whether the run has ended (time, ctx).
func (w *worker) over(ctx context.Context) bool {
	return ctx.Err() != nil || (!w.end.IsZero() && !time.Now().Before(w.end))
}

func (w *worker) run(ctx context.Context) {
	defer w.closeConn()
	for !w.over(ctx) {
		if w.cfg.MaxRequests > 0 && w.issued.Add(1) > w.cfg.MaxRequests {
			return
		}
		if w.conn == nil {
			d := net.Dialer{Timeout: w.cfg.Timeout}
			c, err := d.DialContext(ctx, "tcp", w.addr)
			if err != nil {
				if w.over(ctx) {
					return
				}
				k := classify(err)
				w.t.fail(w.start, k, err)
				if k == Refused && !w.cfg.wait(ctx, w.cfg.Backoff) {
					return
				}
				continue
			}
			w.t.conns++
			w.conn, w.fresh = c, true
			w.stop = context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
			if w.br == nil {
				w.br = bufio.NewReaderSize(c, 16<<10)
			} else {
				w.br.Reset(c)
			}
		}
		w.request(ctx)
	}
}

// request sends one request on w.conn and reads its response.
func (w *worker) request(ctx context.Context) {
	began := time.Now()
	deadline := began.Add(w.cfg.Timeout)
	if !w.end.IsZero() && w.end.Before(deadline) {
		deadline = w.end
	}
	w.conn.SetDeadline(deadline)
	failed := func(err error) {
		// A request cut short by the end of the run is not a failure.
		if !w.over(ctx) || !isTimeout(err) {
			w.t.fail(w.start, classify(err), err)
		}
		w.closeConn()
	}
	if _, err := w.conn.Write(w.rawReq); err != nil {
		failed(err)
		return
	}
	resp, err := http.ReadResponse(w.br, w.req)
	if err != nil {
		failed(err)
		return
	}
	var id string
	if w.cfg.InstanceHeader != "" {
		id = resp.Header.Get(w.cfg.InstanceHeader)
	}
	if id == "" && w.cfg.InstanceFromBody {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 64))
		if rerr != nil {
			resp.Body.Close()
			failed(rerr)
			return
		}
		id = strings.TrimSpace(string(b))
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		resp.Body.Close()
		failed(err)
		return
	}
	resp.Body.Close()
	latency := time.Since(began)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		w.t.fail(w.start, Status, fmt.Errorf("status %s", resp.Status))
	} else {
		w.t.ok++
		w.t.hist.add(latency)
		w.t.instances[id]++
		if w.fresh {
			w.fresh = false
			w.t.connInst[id]++
		}
		w.t.tick(w.start, true)
	}
	if resp.Close {
		w.closeConn()
	}
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
