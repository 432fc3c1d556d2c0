// Package metrics renders keel's figures in the Prometheus text exposition
// format (version 0.0.4) and in OpenMetrics 1.0, for the web listener's
// /metrics. It is written by hand rather than with client_golang: the
// daemon keeps no registry, every scrape renders a snapshot the daemon
// already holds, and the daemon links nothing it does not need (see
// bench/README.md). Tests check the output with Prometheus's own parser.
//
// Families (labels app and instance on every keel_instance_* family):
//
//	keel_instance_up                      gauge: 1 if a process runs
//	keel_instance_status{status}          gauge, a state set: 1 for the current of the six statuses
//	keel_instance_restarts_total{reason}  counter: crash, memory, health, cron, watch, manual, reload
//	keel_instance_cpu_seconds_total       counter: CPU of the process tree
//	keel_instance_memory_bytes            gauge: RSS of the process tree
//	keel_instance_start_time_seconds      gauge: Unix time the process started
//	keel_app_instances_desired            gauge
//	keel_app_instances_ready              gauge
//	keel_crash_group_events_total{group}  counter
//	keel_reload_duration_seconds          histogram: whole rolling reloads
//	keel_ready_duration_seconds           histogram: spawn → ready
//	keel_log_bytes_total{stream}          counter
//
// plus the daemon's own process_* and go_* families. No family carries an
// environment value, a command line or a log line.
package metrics

import (
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"

	"github.com/keel-run/keel/internal/procstat"
	"github.com/keel-run/keel/internal/supervisor"
)

// Format is an exposition format.
type Format int

const (
	Text        Format = iota // Prometheus text 0.0.4
	OpenMetrics               // OpenMetrics 1.0.0
)

// ContentType is the Content-Type of an answer in f.
func (f Format) ContentType() string {
	if f == OpenMetrics {
		return "application/openmetrics-text; version=1.0.0; charset=utf-8"
	}
	return "text/plain; version=0.0.4; charset=utf-8"
}

// Negotiate picks the format for an Accept field: OpenMetrics when the
// client lists application/openmetrics-text with a q above any text/plain,
// the text format otherwise.
func Negotiate(accept string) Format {
	om, text := -1.0, -1.0
	for part := range strings.SplitSeq(accept, ",") {
		fields := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(fields[0]))
		q := 1.0
		for _, p := range fields[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "q") {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		switch mt {
		case "application/openmetrics-text":
			om = max(om, q)
		case "text/plain", "*/*", "text/*":
			text = max(text, q)
		}
	}
	if om > 0 && om >= text {
		return OpenMetrics
	}
	return Text
}

// CrashGroup is one crash group's event count.
type CrashGroup struct {
	App, Group string
	Count      int
}

// LogBytes is how many bytes an app has written to one stream.
type LogBytes struct {
	App    string
	Stream string // "out" or "err"
	Bytes  uint64
}

// Snapshot is everything one scrape renders. Stats is keyed by pid (the
// daemon's stats cache: no /proc read per instance at scrape time).
type Snapshot struct {
	Apps     []supervisor.AppMetrics
	Stats    map[int]procstat.Stat
	Crashes  []CrashGroup
	LogBytes []LogBytes
	// Process is the daemon's own figures; nil leaves out process_* and
	// go_*.
	Process *Process
}

// Write renders s in format f to w, in pieces of about chunk bytes: a
// scrape of 200 instances is some 300 KB, which is not held twice.
func Write(w io.Writer, s *Snapshot, f Format) error {
	e := &encoder{f: f, w: w, buf: make([]byte, 0, chunk+4096), tab: newLabelTables()}
	e.instances(s)
	e.apps(s)
	e.crashes(s)
	e.logBytes(s)
	if s.Process != nil {
		e.process(s.Process)
	}
	if f == OpenMetrics {
		e.buf = append(e.buf, "# EOF\n"...)
	}
	e.flush()
	return e.err
}

const chunk = 32 << 10

type encoder struct {
	f   Format
	w   io.Writer
	buf []byte
	err error
	tab *labelTables
}

// flush writes the buffer out; the first error sticks.
func (e *encoder) flush() {
	if e.err == nil && len(e.buf) > 0 {
		_, e.err = e.w.Write(e.buf)
	}
	e.buf = e.buf[:0]
}

// family writes the HELP and TYPE lines. For a counter, name ends in
// _total; OpenMetrics names the family without it.
func (e *encoder) family(name, typ, help string) {
	if e.f == OpenMetrics && typ == "counter" {
		name = strings.TrimSuffix(name, "_total")
	}
	e.buf = append(e.buf, "# HELP "...)
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ' ')
	e.buf = append(e.buf, help...) // constant text: nothing to escape
	e.buf = append(e.buf, "\n# TYPE "...)
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ' ')
	e.buf = append(e.buf, typ...)
	e.buf = append(e.buf, '\n')
}

// sample writes one line; labels is already encoded (see label), without
// braces, and may be empty.
func (e *encoder) sample(name, labels string, v float64) { e.sample2(name, labels, "", v) }

// sample2 is sample with a second label list, kept apart to save the
// concatenation on every line.
func (e *encoder) sample2(name, labels, more string, v float64) {
	e.buf = append(e.buf, name...)
	if labels != "" || more != "" {
		e.buf = append(e.buf, '{')
		e.buf = append(e.buf, labels...)
		if labels != "" && more != "" {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(e.buf, more...)
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, ' ')
	e.buf = appendValue(e.buf, v)
	e.buf = append(e.buf, '\n')
	if len(e.buf) >= chunk {
		e.flush()
	}
}

func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// label encodes name="value" with the format's escapes.
func label(name, value string) string {
	var b strings.Builder
	b.Grow(len(name) + len(value) + 3)
	b.WriteString(name)
	b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func join(labels ...string) string { return strings.Join(labels, ",") }

// labelTables are the label pairs that are the same for every instance
// or histogram, encoded once a scrape (not at init: every keel process,
// the CLI and the keepers included, would pay for them).
type labelTables struct {
	status [supervisor.Errored + 1]string
	reason [len(supervisor.RestartReasons)]string
	le     []string
}

func newLabelTables() *labelTables {
	t := &labelTables{}
	for st := supervisor.Starting; st <= supervisor.Errored; st++ {
		t.status[st] = label("status", st.String())
	}
	for i, r := range supervisor.RestartReasons {
		t.reason[i] = label("reason", r)
	}
	for _, le := range supervisor.HistogramBounds {
		t.le = append(t.le, label("le", strconv.FormatFloat(le, 'g', -1, 64)))
	}
	return t
}

type instanceRow struct {
	labels string
	in     *supervisor.InstanceMetrics
	stat   procstat.Stat
	hasSt  bool
}

func (e *encoder) instances(s *Snapshot) {
	var rows []instanceRow
	for i := range s.Apps {
		a := &s.Apps[i]
		app := label("app", a.App)
		for j := range a.Instances {
			in := &a.Instances[j]
			r := instanceRow{labels: join(app, label("instance", strconv.Itoa(in.Instance))), in: in}
			if in.Pid != 0 {
				r.stat, r.hasSt = s.Stats[in.Pid]
			}
			rows = append(rows, r)
		}
	}
	e.family("keel_instance_up", "gauge", "1 if the instance has a running process, else 0.")
	for _, r := range rows {
		up := 0.0
		if r.in.Pid != 0 {
			up = 1
		}
		e.sample("keel_instance_up", r.labels, up)
	}
	e.family("keel_instance_status", "gauge", "The instance's status, a state set: 1 for the current one of starting, online, stopping, stopped, waiting, errored.")
	for _, r := range rows {
		for st := supervisor.Starting; st <= supervisor.Errored; st++ {
			v := 0.0
			if r.in.Status == st {
				v = 1
			}
			e.sample2("keel_instance_status", r.labels, e.tab.status[st], v)
		}
	}
	e.family("keel_instance_restarts_total", "counter", "Restarts of the instance since the daemon started, by reason.")
	for _, r := range rows {
		for i := range supervisor.RestartReasons {
			e.sample2("keel_instance_restarts_total", r.labels, e.tab.reason[i], float64(r.in.Restarts[i]))
		}
	}
	e.family("keel_instance_cpu_seconds_total", "counter", "CPU time (user and system) used by the instance's running process tree.")
	for _, r := range rows {
		if r.hasSt {
			e.sample("keel_instance_cpu_seconds_total", r.labels, r.stat.CPUSeconds)
		}
	}
	e.family("keel_instance_memory_bytes", "gauge", "Resident memory (RSS) of the instance's process tree.")
	for _, r := range rows {
		if r.hasSt {
			e.sample("keel_instance_memory_bytes", r.labels, float64(r.stat.RSS))
		}
	}
	e.family("keel_instance_start_time_seconds", "gauge", "Unix time the instance's running process started.")
	for _, r := range rows {
		if r.in.Pid != 0 && !r.in.Started.IsZero() {
			e.sample("keel_instance_start_time_seconds", r.labels, float64(r.in.Started.UnixNano())/1e9)
		}
	}
}

func (e *encoder) apps(s *Snapshot) {
	e.family("keel_app_instances_desired", "gauge", "Instances keel keeps running for the app.")
	for _, a := range s.Apps {
		e.sample("keel_app_instances_desired", label("app", a.App), float64(a.Desired))
	}
	e.family("keel_app_instances_ready", "gauge", "Instances of the app that are online.")
	for _, a := range s.Apps {
		e.sample("keel_app_instances_ready", label("app", a.App), float64(a.Ready))
	}
	e.family("keel_reload_duration_seconds", "histogram", "Duration of whole rolling reloads of the app.")
	for _, a := range s.Apps {
		e.histogram("keel_reload_duration_seconds", label("app", a.App), a.ReloadDurations)
	}
	e.family("keel_ready_duration_seconds", "histogram", "Time from spawn to ready of the app's processes.")
	for _, a := range s.Apps {
		e.histogram("keel_ready_duration_seconds", label("app", a.App), a.ReadyDurations)
	}
}

func (e *encoder) histogram(name, labels string, h supervisor.Histogram) {
	var cum uint64
	bucket := name + "_bucket"
	for i, le := range e.tab.le {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		e.sample2(bucket, labels, le, float64(cum))
	}
	e.sample2(bucket, labels, `le="+Inf"`, float64(h.Count))
	e.sample(name+"_sum", labels, h.Sum)
	e.sample(name+"_count", labels, float64(h.Count))
}

func (e *encoder) crashes(s *Snapshot) {
	e.family("keel_crash_group_events_total", "counter", "Crashes recorded in each crash group (see keel crashes).")
	for _, g := range s.Crashes {
		e.sample("keel_crash_group_events_total", join(label("app", g.App), label("group", g.Group)), float64(g.Count))
	}
}

func (e *encoder) logBytes(s *Snapshot) {
	e.family("keel_log_bytes_total", "counter", "Bytes the app's instances wrote to a stream since the daemon started.")
	for _, l := range s.LogBytes {
		e.sample("keel_log_bytes_total", join(label("app", l.App), label("stream", l.Stream)), float64(l.Bytes))
	}
}

func (e *encoder) process(p *Process) {
	e.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
	e.sample("process_cpu_seconds_total", "", p.CPUSeconds)
	e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
	e.sample("process_resident_memory_bytes", "", float64(p.RSS))
	e.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
	e.sample("process_virtual_memory_bytes", "", float64(p.VSize))
	e.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
	e.sample("process_start_time_seconds", "", p.StartTime)
	e.family("process_open_fds", "gauge", "Number of open file descriptors.")
	e.sample("process_open_fds", "", float64(p.OpenFDs))
	e.family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
	e.sample("process_max_fds", "", float64(p.MaxFDs))
	e.family("go_info", "gauge", "Information about the Go environment.")
	e.sample("go_info", label("version", runtime.Version()), 1)
	e.family("go_goroutines", "gauge", "Number of goroutines that currently exist.")
	e.sample("go_goroutines", "", float64(p.Goroutines))
	e.family("go_threads", "gauge", "Number of OS threads created.")
	e.sample("go_threads", "", float64(p.Threads))
	e.family("go_memstats_heap_alloc_bytes", "gauge", "Number of heap bytes allocated and still in use.")
	e.sample("go_memstats_heap_alloc_bytes", "", float64(p.HeapAlloc))
	e.family("go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use.")
	e.sample("go_memstats_heap_inuse_bytes", "", float64(p.HeapInuse))
	e.family("go_memstats_sys_bytes", "gauge", "Number of bytes obtained from system.")
	e.sample("go_memstats_sys_bytes", "", float64(p.Sys))
	e.family("go_gc_cycles_total", "counter", "Completed garbage collection cycles.")
	e.sample("go_gc_cycles_total", "", float64(p.GCCycles))
}
