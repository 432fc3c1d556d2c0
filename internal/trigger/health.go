package trigger

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/keel-run/keel/internal/http1"
	"github.com/keel-run/keel/internal/ready"
	"github.com/keel-run/keel/internal/spec"
)

// health is the health_url trigger.
type health struct {
	url      string
	interval time.Duration
	timeout  time.Duration
	failures int
	live     func() []Live
}

func newHealth(cfg Config) (*health, error) {
	app := cfg.App
	u, err := url.Parse(app.HealthURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &spec.FieldError{Field: "health_url", Err: fmt.Errorf("%q: want an http:// or https:// URL", app.HealthURL)}
	}
	h := &health{
		url:      app.HealthURL,
		interval: time.Duration(app.HealthInterval),
		failures: app.HealthFailures,
		timeout:  cfg.HealthTimeout,
		live:     cfg.Live,
	}
	if h.interval <= 0 {
		h.interval = 10 * time.Second
	}
	if h.failures <= 0 {
		h.failures = 3
	}
	if h.timeout <= 0 {
		h.timeout = min(DefaultHealthTimeout, h.interval)
	}
	return h, nil
}

func (h *health) describe() string {
	return fmt.Sprintf("GET %s every %s, restart after %d failures", h.url, h.interval, h.failures)
}

// run probes every interval while an instance is live, and fires after
// h.failures failures in a row. While nothing is live it does not probe
// and forgets earlier failures.
func (h *health) run(ctx context.Context, fire func(Restart)) {
	// http1.Client keeps no connection (one request per interval; no
	// idle connection or goroutine outlives a probe) and uses no proxy
	// (the check is of this host's app, not of a proxy).
	var client http1.Client

	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if len(h.live()) == 0 {
			fails = 0
			continue
		}
		why := h.probe(ctx, &client)
		if ctx.Err() != nil {
			return
		}
		if why == "" {
			fails = 0
			continue
		}
		fails++
		if fails >= h.failures {
			fails = 0
			fire(Restart{
				Instance: AllInstances,
				Reason:   ReasonHealth,
				Detail:   "GET " + h.url + ": " + why + " ×" + strconv.Itoa(h.failures),
			})
		}
	}
}

// probe makes one request. It returns "" for a 2xx answer, else why not:
// the status code, "connection refused", "timeout after 5s" or the error.
func (h *health) probe(ctx context.Context, client *http1.Client) string {
	var ge *ready.GetError
	switch err := ready.Get(ctx, client, h.url, "keel-health", h.timeout); {
	case err == nil:
		return ""
	case errors.As(err, &ge):
		return ge.Reason()
	default:
		return err.Error()
	}
}
