package crash

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/oneline"
)

// Defaults of NotifierOptions.
const (
	DefaultNotifyTimeout  = 10 * time.Second
	DefaultRepeatInterval = 10 * time.Minute
	DefaultAppLimit       = 5
	DefaultAppWindow      = time.Minute
	DefaultMaxInFlight    = 16
)

// NotifierOptions configure a Notifier. Zero fields take the defaults.
type NotifierOptions struct {
	// Now is the clock rate limits are computed with (time.Now).
	Now func() time.Time
	// Timeout bounds one delivery: the command is killed (its whole
	// process group), the request cancelled (DefaultNotifyTimeout).
	Timeout time.Duration
	// RepeatInterval is the least time between two notifications of the
	// same group (DefaultRepeatInterval). A new group is always notified,
	// within the app's limit.
	RepeatInterval time.Duration
	// AppLimit notifications at most per app in any AppWindow
	// (DefaultAppLimit per DefaultAppWindow).
	AppLimit  int
	AppWindow time.Duration
	// MaxInFlight deliveries at once; beyond, notifications are dropped
	// (DefaultMaxInFlight).
	MaxInFlight int
	// Logger gets one record per failed delivery (discarded if nil).
	Logger *slog.Logger
	// TLSConfig configures the connections to https:// URLs: nil means
	// the system's roots, the certificate verified for the URL's host
	// (which is also sent as SNI). Tests trust their own server with it.
	TLSConfig *tls.Config
	// Start starts a command and returns its wait; nil: cmd.Start and
	// cmd.Wait. (`keel run`'s reaper must not take the command's status.)
	Start func(*exec.Cmd) (wait func() error, err error)
	// Done, if set, is called after each delivery with its outcome, from
	// the delivery's goroutine.
	Done func(Delivery)
}

// Notification is the JSON an on_crash hook gets: on stdin for a command,
// as the POST body for a URL.
type Notification struct {
	Event string `json:"event"` // "crash"
	// New is true for the first notification of a group.
	New bool `json:"new"`
	// Suppressed counts the crashes of this group not notified since the
	// previous notification, because of the rate limits.
	Suppressed int        `json:"suppressed"`
	Group      Group      `json:"group"`
	Exit       ExitRecord `json:"exit"` // the exit that triggered this notification
}

// Delivery is the outcome of one notification.
type Delivery struct {
	Target       string
	Notification Notification
	Err          error // nil: the command exited 0, or the URL answered 2xx
}

// Notifier delivers crash notifications to on_crash hooks, rate-limited.
// Its methods are safe for concurrent use.
type Notifier struct {
	o      NotifierOptions
	client *http1.Client // one connection per POST, no proxy

	mu       sync.Mutex // guards the fields below
	closed   bool
	inFlight int
	groups   map[string]*groupNote // by group id
	apps     map[string][]time.Time
	wg       sync.WaitGroup
}

type groupNote struct {
	last       time.Time // last notification
	suppressed int       // crashes not notified since
}

// NewNotifier returns a Notifier; Close it to wait for its deliveries.
func NewNotifier(o NotifierOptions) *Notifier {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultNotifyTimeout
	}
	if o.RepeatInterval <= 0 {
		o.RepeatInterval = DefaultRepeatInterval
	}
	if o.AppLimit <= 0 {
		o.AppLimit = DefaultAppLimit
	}
	if o.AppWindow <= 0 {
		o.AppWindow = DefaultAppWindow
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Notifier{
		o:      o,
		client: &http1.Client{TLSConfig: o.TLSConfig},
		groups: make(map[string]*groupNote),
		apps:   make(map[string][]time.Time),
	}
}

// Notify tells target — an app's on_crash setting: an http:// or https://
// URL, else a shell command — about a crash of group g (isNew as Book.Add
// returned it) whose latest exit is exit. It returns at once: true if a
// delivery was started, false if target is empty, the Notifier is closed,
// or a limit held it back (a repeat of g within RepeatInterval, the app's
// AppLimit reached in the last AppWindow, MaxInFlight deliveries running).
// Held-back crashes are counted in the next notification's Suppressed.
func (n *Notifier) Notify(target string, g Group, isNew bool, exit ExitRecord) bool {
	target = strings.TrimSpace(target)
	if target == "" {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	now := n.o.Now()
	n.pruneLocked(now)
	gn := n.groups[g.ID]
	if gn == nil {
		gn = &groupNote{}
		n.groups[g.ID] = gn
	}
	recent := n.apps[g.App]
	repeat := !isNew && !gn.last.IsZero() && now.Sub(gn.last) < n.o.RepeatInterval
	if repeat || len(recent) >= n.o.AppLimit || n.inFlight >= n.o.MaxInFlight {
		gn.suppressed++
		return false
	}
	note := Notification{Event: "crash", New: isNew, Suppressed: gn.suppressed, Group: g.clone(), Exit: exit}
	gn.last, gn.suppressed = now, 0
	n.apps[g.App] = append(recent, now)
	n.inFlight++
	n.wg.Add(1)
	go n.deliver(target, note)
	return true
}

// pruneLocked forgets app notifications older than AppWindow and groups
// that could be notified again and have nothing suppressed. n.mu is held.
func (n *Notifier) pruneLocked(now time.Time) {
	for app, ts := range n.apps {
		k := 0
		for k < len(ts) && now.Sub(ts[k]) >= n.o.AppWindow {
			k++
		}
		if k == len(ts) {
			delete(n.apps, app)
		} else {
			n.apps[app] = ts[k:]
		}
	}
	if len(n.groups) > 1024 {
		for id, gn := range n.groups {
			if gn.suppressed == 0 && now.Sub(gn.last) >= n.o.RepeatInterval {
				delete(n.groups, id)
			}
		}
	}
}

// Close stops accepting notifications and waits for those in flight (each
// bounded by Timeout).
func (n *Notifier) Close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.wg.Wait()
}

func (n *Notifier) deliver(target string, note Notification) {
	defer n.wg.Done()
	body, err := json.Marshal(note)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), n.o.Timeout)
		if isURL(target) {
			err = n.post(ctx, target, body)
		} else {
			err = n.run(ctx, target, body, note)
		}
		cancel()
	}
	if err != nil {
		n.o.Logger.Warn("on_crash notification failed", "app", note.Group.App, "group", note.Group.ID, "err", err)
	}
	n.mu.Lock()
	n.inFlight--
	n.mu.Unlock()
	if n.o.Done != nil {
		n.o.Done(Delivery{Target: target, Notification: note, Err: err})
	}
}

func isURL(target string) bool {
	t := strings.ToLower(target)
	return strings.HasPrefix(t, "http://") || strings.HasPrefix(t, "https://")
}

func (n *Notifier) post(ctx context.Context, target string, body []byte) error {
	h := http1.Header{"Content-Type": {"application/json"}, "User-Agent": {"keel-on-crash"}}
	resp, err := n.client.Do(ctx, "POST", target, h, body)
	if err != nil {
		return fmt.Errorf("posting crash to on_crash URL %s: %w", redacted(target), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("posting crash to on_crash URL %s: answered %s", redacted(target), resp.Status)
	}
	return nil
}

// redacted is rawURL with the password in it, if any, replaced by "xxxxx",
// for the log.
func redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Redacted()
}

// run runs the command with `sh -c`, the notification on stdin, in its
// own process group so that a timeout kills all it started.
func (n *Notifier) run(ctx context.Context, command string, body []byte, note Notification) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdin = bytes.NewReader(body)
	out := &capped{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(),
		"KEEL_CRASH_APP="+note.Group.App,
		"KEEL_CRASH_ID="+note.Group.ID,
		"KEEL_CRASH_TITLE="+note.Group.Title,
		"KEEL_CRASH_COUNT="+strconv.Itoa(note.Group.Count),
		"KEEL_CRASH_NEW="+strconv.FormatBool(note.New),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // a grandchild holding the output pipe must not hold us
	err := n.runCmd(cmd)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %s)", err, n.o.Timeout)
	}
	if o := strings.TrimSpace(out.String()); o != "" {
		return fmt.Errorf("running on_crash command: %w: %s", err, oneline.Fold(o, 200))
	}
	return fmt.Errorf("running on_crash command: %w", err)
}

func (n *Notifier) runCmd(cmd *exec.Cmd) error {
	if n.o.Start == nil {
		return cmd.Run()
	}
	wait, err := n.o.Start(cmd)
	if err != nil {
		return err
	}
	return wait()
}

// capped keeps the first max bytes written to it.
type capped struct {
	max int
	buf bytes.Buffer
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.buf.String() }
