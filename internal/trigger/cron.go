package trigger

import (
	"context"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/keel-run/keel/internal/spec"
)

// cronTrigger is the cron_restart trigger.
type cronTrigger struct {
	spec  string
	sched cron.Schedule
	now   func() time.Time
}

func newCron(cfg Config) (*cronTrigger, error) {
	sched, err := cron.ParseStandard(cfg.App.CronRestart)
	if err != nil {
		return nil, &spec.FieldError{Field: "cron_restart", Err: err}
	}
	return &cronTrigger{spec: cfg.App.CronRestart, sched: sched, now: cfg.Now}, nil
}

func (c *cronTrigger) describe() string {
	return c.spec + " (next " + c.sched.Next(c.now()).Format(time.RFC3339) + ")"
}

// maxCronWait bounds one wait, so that a clock change or a suspended
// machine delays an activation by at most this much.
const maxCronWait = time.Minute

// run fires at every activation. It waits in steps of at most maxCronWait
// and compares with the clock after each, rather than trusting one long
// timer.
func (c *cronTrigger) run(ctx context.Context, fire func(Restart)) {
	timer := time.NewTimer(maxCronWait) // Reset below before every use
	defer timer.Stop()
	next := c.sched.Next(c.now())
	for {
		if next.IsZero() {
			return // a spec that never activates (e.g. 30 February)
		}
		wait := next.Sub(c.now())
		if wait <= 0 {
			fire(Restart{Instance: AllInstances, Reason: ReasonCron, Detail: c.spec})
			next = c.sched.Next(c.now())
			continue
		}
		timer.Reset(min(wait, maxCronWait))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}
