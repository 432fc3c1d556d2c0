package metrics_test

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keel-run/keel/internal/metrics"
	"github.com/keel-run/keel/internal/procstat"
	"github.com/keel-run/keel/internal/supervisor"
)

// snapshot is two apps: web with two instances (one online with stats,
// one waiting after crashes) and an app whose name needs no escaping but
// whose crash group label does.
func snapshot(t testing.TB) *metrics.Snapshot {
	started := time.Unix(1700000000, 500_000_000)
	var ready, reload supervisor.Histogram
	ready.Counts = make([]uint64, len(supervisor.HistogramBounds)+1)
	ready.Counts[3] = 2                   // ≤ 0.05
	ready.Counts[len(ready.Counts)-1] = 1 // above every bound
	ready.Sum, ready.Count = 400.07, 3
	web := supervisor.AppMetrics{
		App: "web", Desired: 2, Ready: 1, ReadyDurations: ready, ReloadDurations: reload,
		Instances: []supervisor.InstanceMetrics{
			{InstanceInfo: supervisor.InstanceInfo{App: "web", Instance: 0, Pid: 4242, Status: supervisor.Online, Started: started}},
			{InstanceInfo: supervisor.InstanceInfo{App: "web", Instance: 1, Status: supervisor.Waiting}},
		},
	}
	web.Instances[1].Restarts[0] = 3 // crash
	web.Instances[1].Restarts[6] = 1 // reload
	var p metrics.ProcessReader
	proc, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	return &metrics.Snapshot{
		Apps:     []supervisor.AppMetrics{web, {App: "worker-2"}},
		Stats:    map[int]procstat.Stat{4242: {RSS: 52 << 20, CPUSeconds: 12.34}},
		Crashes:  []metrics.CrashGroup{{App: "web", Group: "TypeError \"x\" \\ at\nline", Count: 4}},
		LogBytes: []metrics.LogBytes{{App: "web", Stream: "out", Bytes: 1234}, {App: "web", Stream: "err", Bytes: 5}},
		Process:  proc,
	}
}

func parse(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Prometheus's parser refuses the output: %v\n%s", err, b)
	}
	return fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		l := labels(m)
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s is a %v", name, f.GetType())
	}
	t.Fatalf("no sample of %s with %v", name, want)
	return 0
}

func TestTextFormatParses(t *testing.T) {
	var b bytes.Buffer
	if err := metrics.Write(&b, snapshot(t), metrics.Text); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, b.Bytes())
	types := map[string]dto.MetricType{
		"keel_instance_up":                 dto.MetricType_GAUGE,
		"keel_instance_status":             dto.MetricType_GAUGE,
		"keel_instance_restarts_total":     dto.MetricType_COUNTER,
		"keel_instance_cpu_seconds_total":  dto.MetricType_COUNTER,
		"keel_instance_memory_bytes":       dto.MetricType_GAUGE,
		"keel_instance_start_time_seconds": dto.MetricType_GAUGE,
		"keel_app_instances_desired":       dto.MetricType_GAUGE,
		"keel_app_instances_ready":         dto.MetricType_GAUGE,
		"keel_crash_group_events_total":    dto.MetricType_COUNTER,
		"keel_reload_duration_seconds":     dto.MetricType_HISTOGRAM,
		"keel_ready_duration_seconds":      dto.MetricType_HISTOGRAM,
		"keel_log_bytes_total":             dto.MetricType_COUNTER,
		"process_cpu_seconds_total":        dto.MetricType_COUNTER,
		"process_resident_memory_bytes":    dto.MetricType_GAUGE,
		"process_start_time_seconds":       dto.MetricType_GAUGE,
		"go_goroutines":                    dto.MetricType_GAUGE,
		"go_info":                          dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		f, ok := fams[name]
		if !ok {
			t.Errorf("family %s missing", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
	web0 := map[string]string{"app": "web", "instance": "0"}
	web1 := map[string]string{"app": "web", "instance": "1"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keel_instance_up", web0, 1},
		{"keel_instance_up", web1, 0},
		{"keel_instance_status", map[string]string{"app": "web", "instance": "0", "status": "online"}, 1},
		{"keel_instance_status", map[string]string{"app": "web", "instance": "0", "status": "waiting"}, 0},
		{"keel_instance_status", map[string]string{"app": "web", "instance": "1", "status": "waiting"}, 1},
		{"keel_instance_restarts_total", map[string]string{"app": "web", "instance": "1", "reason": "crash"}, 3},
		{"keel_instance_restarts_total", map[string]string{"app": "web", "instance": "1", "reason": "reload"}, 1},
		{"keel_instance_restarts_total", map[string]string{"app": "web", "instance": "1", "reason": "cron"}, 0},
		{"keel_instance_cpu_seconds_total", web0, 12.34},
		{"keel_instance_memory_bytes", web0, 52 << 20},
		{"keel_instance_start_time_seconds", web0, 1700000000.5},
		{"keel_app_instances_desired", map[string]string{"app": "web"}, 2},
		{"keel_app_instances_ready", map[string]string{"app": "worker-2"}, 0},
		{"keel_crash_group_events_total", map[string]string{"app": "web", "group": `TypeError "x" \ at` + "\nline"}, 4},
		{"keel_log_bytes_total", map[string]string{"app": "web", "stream": "err"}, 5},
	}
	for _, c := range checks {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Six statuses per instance, seven reasons.
	if n := len(fams["keel_instance_status"].GetMetric()); n != 12 {
		t.Errorf("keel_instance_status has %d samples, want 6 per instance", n)
	}
	if n := len(fams["keel_instance_restarts_total"].GetMetric()); n != 14 {
		t.Errorf("keel_instance_restarts_total has %d samples, want 7 per instance", n)
	}
	for _, m := range fams["keel_ready_duration_seconds"].GetMetric() {
		if labels(m)["app"] != "web" {
			continue
		}
		h := m.GetHistogram()
		if h.GetSampleCount() != 3 || math.Abs(h.GetSampleSum()-400.07) > 1e-9 {
			t.Errorf("ready histogram count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
		}
		for _, bk := range h.GetBucket() {
			want := uint64(2)
			if math.IsInf(bk.GetUpperBound(), 1) {
				want = 3
			} else if bk.GetUpperBound() < 0.05 {
				want = 0
			}
			if bk.GetCumulativeCount() != want {
				t.Errorf("bucket le=%v count %d, want %d", bk.GetUpperBound(), bk.GetCumulativeCount(), want)
			}
		}
	}
	if v := value(t, fams, "process_resident_memory_bytes", nil); v < 1<<20 {
		t.Errorf("process_resident_memory_bytes = %v", v)
	}
}

func TestOpenMetrics(t *testing.T) {
	var b bytes.Buffer
	if err := metrics.Write(&b, snapshot(t), metrics.OpenMetrics); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{
		"# TYPE keel_instance_restarts counter\n",
		`keel_instance_restarts_total{app="web",instance="1",reason="crash"} 3` + "\n",
		"# TYPE keel_ready_duration_seconds histogram\n",
		`keel_ready_duration_seconds_bucket{app="web",le="+Inf"} 3` + "\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("OpenMetrics output lacks %q", want)
		}
	}
	if !strings.HasSuffix(s, "\n# EOF\n") {
		t.Errorf("OpenMetrics output does not end with # EOF")
	}
}

func TestNegotiate(t *testing.T) {
	for accept, want := range map[string]metrics.Format{
		"":           metrics.Text,
		"text/plain": metrics.Text,
		// What Prometheus 2.x sends by default.
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1": metrics.OpenMetrics,
		"text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5":                                                                       metrics.Text,
		"application/json": metrics.Text,
	} {
		if got := metrics.Negotiate(accept); got != want {
			t.Errorf("Negotiate(%q) = %v, want %v", accept, got, want)
		}
	}
}

// BenchmarkWrite200 renders 200 instances, as bench/ measures a scrape.
func BenchmarkWrite200(b *testing.B) {
	s := snapshot(b)
	one := s.Apps[0]
	s.Apps = nil
	s.Stats = map[int]procstat.Stat{}
	for a := 0; a < 20; a++ {
		app := one
		app.App = "app" + string(rune('a'+a))
		app.Instances = nil
		for i := 0; i < 10; i++ {
			in := one.Instances[0]
			in.Instance, in.Pid = i, 1000+a*10+i
			s.Stats[in.Pid] = procstat.Stat{RSS: 40 << 20, CPUSeconds: 3.5}
			app.Instances = append(app.Instances, in)
		}
		s.Apps = append(s.Apps, app)
	}
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		metrics.Write(&buf, s, metrics.Text)
	}
}
