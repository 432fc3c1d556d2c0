// Package api holds the types that travel between the keel CLI and the
// daemon over the control socket, as JSON. Field names are part of SPEC.md's
// contract: they may be added to, never renamed.
package api

import (
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// Version of the control protocol; the path prefix of every endpoint.
const Prefix = "/v1"

// Instance is one row of `keel ls --json`.
type Instance struct {
	App         string     `json:"app"`
	Instance    int        `json:"instance"`
	Pid         int        `json:"pid"`
	Status      string     `json:"status"`
	Restarts    int        `json:"restarts"`
	UptimeMs    int64      `json:"uptime_ms"`
	MemoryBytes int64      `json:"memory_bytes"`
	CPUPercent  float64    `json:"cpu_percent"`
	LastExit    *spec.Exit `json:"last_exit"`
	// Reason says why an instance is errored or waiting.
	Reason string `json:"reason,omitempty"`
	// StatusText is the app's last sd_notify STATUS= line.
	StatusText string `json:"status_text,omitempty"`
}

// AppDetail is `keel describe --json`.
type AppDetail struct {
	Spec        *spec.App     `json:"spec"`
	Desired     string        `json:"desired"` // "running" or "stopped"
	Instances   []Instance    `json:"instances"`
	Exits       []ExitRecord  `json:"exits"` // newest last, bounded
	LatestCrash *CrashGroup   `json:"latest_crash,omitempty"`
	Triggers    []TriggerInfo `json:"triggers,omitempty"`
	Sockets     []string      `json:"sockets,omitempty"`
	// Deploying is the definition being rolled out by a `keel reload
	// FILE` still under way; Spec stays the app's until it is done.
	Deploying *spec.App `json:"deploying,omitempty"`
	// Containment says how keel ends the app's descendants with it.
	Containment string `json:"containment,omitempty"`
}

// ExitRecord is one exit in an app's history.
type ExitRecord struct {
	Instance int       `json:"instance"`
	Pid      int       `json:"pid"`
	Exit     spec.Exit `json:"exit"`
}

// TriggerInfo describes one restart trigger of an app (max_memory, cron,
// watch, health) and when it last fired.
type TriggerInfo struct {
	Kind      string     `json:"kind"`
	Detail    string     `json:"detail"`
	LastFired *time.Time `json:"last_fired,omitempty"`
	Count     int        `json:"count"`
}

// CrashGroup is one element of `keel crashes --json`.
type CrashGroup struct {
	ID        string    `json:"id"`
	App       string    `json:"app"`
	Signature string    `json:"signature"`
	Title     string    `json:"title"`
	Count     int       `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	LastStack string    `json:"last_stack"`
}

// CrashDetail is `keel crash <id> --json`: the group and the exits it covers.
type CrashDetail struct {
	CrashGroup
	Kind  string       `json:"kind"`
	Exits []ExitRecord `json:"exits"`
}

// StartRequest defines and starts apps.
type StartRequest struct {
	Apps []*spec.App `json:"apps"`
}

// TargetRequest names a target: "all", "app" or "app:N".
type TargetRequest struct {
	Target string `json:"target"`
}

// ScaleRequest changes an app's instance count.
type ScaleRequest struct {
	App       string `json:"app"`
	Instances int    `json:"instances"`
}

// Result is the answer to a command: what it touched.
type Result struct {
	Instances []Instance `json:"instances,omitempty"`
	Message   string     `json:"message,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Version is the daemon's identity.
type Version struct {
	Version string `json:"version"`
	Pid     int    `json:"pid"`
	Home    string `json:"home"`
}

// WebRequest switches the daemon's web listener: on at Listen (the
// current or default address when ""), or off.
type WebRequest struct {
	Listen string `json:"listen,omitempty"`
	Off    bool   `json:"off,omitempty"`
}

// WebInfo is the web listener's state: `keel web --json` prints URL,
// Listen and Token.
type WebInfo struct {
	URL    string `json:"url,omitempty"`
	Listen string `json:"listen"`
	Token  string `json:"token,omitempty"`
	On     bool   `json:"on"`
}

// Apply modes: what replaces an app whose definition changed.
const (
	ApplyStart   = "start"   // stop then start, as ApplyRestart
	ApplyRestart = "restart" // stop then start
	ApplyReload  = "reload"  // rolling, ready-gated, rolled back on failure
)

// ApplyRequest makes the running apps match Apps (`keel start|restart|reload
// FILE`, `keel diff FILE`).
type ApplyRequest struct {
	Apps   []*spec.App `json:"apps"`
	Mode   string      `json:"mode"`
	Prune  bool        `json:"prune,omitempty"`
	DryRun bool        `json:"dry_run,omitempty"`
}

// AppChange is one app's line of an apply: what is planned and, unless it
// was a dry run, what happened.
type AppChange struct {
	App string `json:"app"`
	// Action is the plan: "start", "unchanged", "scale", "replace" or
	// "delete".
	Action string `json:"action"`
	// Done is what happened: "started", "unchanged", "scaled",
	// "reloaded", "restarted", "deleted", "rolled back" or "failed".
	Done    string        `json:"done,omitempty"`
	Changes []spec.Change `json:"changes,omitempty"`
	From    int           `json:"from"`
	To      int           `json:"to"`
	Error   string        `json:"error,omitempty"`
	// FailedInstance and Logs, for a rollout that failed: the instance
	// whose new process failed, and its last log lines.
	FailedInstance *int     `json:"failed_instance,omitempty"`
	Logs           []string `json:"logs,omitempty"`
}

// ApplyResult is the answer to an ApplyRequest. An app that failed does
// not fail the request: its AppChange says so, and so does Error.
type ApplyResult struct {
	Apps      []AppChange `json:"apps"`
	Instances []Instance  `json:"instances,omitempty"`
	Error     string      `json:"error,omitempty"`
}
