package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/oneline"
	"github.com/keel-run/keel/internal/spec"
)

// writeJSON prints v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// printResult prints what a command did: its message and the instances it
// touched, or the api.Result as JSON.
func (r *runner) printResult(res api.Result, asJSON bool) error {
	if asJSON {
		return writeJSON(r.stdio.Out, res)
	}
	if res.Message != "" {
		fmt.Fprintln(r.stdio.Out, res.Message)
	}
	if len(res.Instances) > 0 {
		return writeInstances(r.stdio.Out, res.Instances, time.Now())
	}
	return nil
}

// table is a tabwriter whose lines lose the spaces an empty last cell is
// padded with.
type table struct {
	w   io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer) *table {
	t := &table{w: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) Write(p []byte) (int, error) { return t.tw.Write(p) }

// Flush writes the table out.
func (t *table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(t.buf.Bytes(), []byte("\n")) {
		if body, ok := bytes.CutSuffix(line, []byte("\n")); ok {
			out.Write(bytes.TrimRight(body, " "))
			out.WriteByte('\n')
		} else {
			out.Write(line)
		}
	}
	t.buf.Reset()
	_, err := t.w.Write(out.Bytes())
	return err
}

// writeInstances prints the `keel ls` table. A last INFO column, shown when
// some instance has one, says why an instance is errored or waiting, or
// the app's own status line.
func writeInstances(w io.Writer, l []api.Instance, now time.Time) error {
	info := false
	for _, in := range l {
		if in.Reason != "" || in.StatusText != "" {
			info = true
		}
	}
	tw := newTable(w)
	header := "NAME\tID\tPID\tSTATUS\tRESTARTS\tUPTIME\tCPU\tMEM"
	if info {
		header += "\tINFO"
	}
	fmt.Fprintln(tw, header)
	for _, in := range l {
		pid, cpu, mem, up := "-", "-", "-", "-"
		if in.Pid > 0 {
			pid = strconv.Itoa(in.Pid)
			cpu = fmt.Sprintf("%.1f%%", in.CPUPercent)
			mem = humanBytes(in.MemoryBytes)
		}
		if in.Pid > 0 && in.UptimeMs > 0 {
			up = humanDuration(time.Duration(in.UptimeMs) * time.Millisecond)
		}
		status := in.Status
		if status == "" {
			status = "?"
		}
		row := fmt.Sprintf("%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s", in.App, in.Instance, pid, status, in.Restarts, up, cpu, mem)
		if info {
			row += "\t" + instanceInfo(in, now)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

func instanceInfo(in api.Instance, now time.Time) string {
	var parts []string
	if in.Reason != "" {
		parts = append(parts, oneline.Fold(in.Reason, 0))
	}
	if in.StatusText != "" {
		parts = append(parts, oneline.Fold(in.StatusText, 0))
	}
	if len(parts) == 0 && in.LastExit != nil && (in.Status == "stopped" || in.Status == "errored") {
		parts = append(parts, "last exit: "+in.LastExit.String()+" "+ago(in.LastExit.At, now))
	}
	return strings.Join(parts, "; ")
}

// humanBytes writes n as 512B, 4.0K, 45.2M, 1.5G (powers of 1024).
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	v, suffix := float64(n)/unit, "K"
	for _, s := range []string{"M", "G", "T"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f%s", v, suffix)
}

// humanDuration writes d the way pm2 shows uptime: 12s, 5m, 3h, 2d.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// ago writes how long before now t was: "5m ago"; "" for a zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return humanDuration(d) + " ago"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// writeDetails prints `keel describe`: per app, its options (by config
// key, in the option table's order), its instances, recent exits, latest
// crash, triggers and sockets.
func writeDetails(w io.Writer, apps []api.AppDetail, home string, now time.Time) error {
	for i, d := range apps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		name := "?"
		if d.Spec != nil {
			name = d.Spec.Name
		}
		fmt.Fprintf(w, "%s (desired: %s)\n", name, d.Desired)
		if d.Deploying != nil && d.Spec != nil {
			var keys []string
			for _, c := range spec.Diff(d.Spec, d.Deploying) {
				keys = append(keys, changeName(c))
			}
			fmt.Fprintf(w, "  deploying: a reload is rolling out a new definition (%s changed); below is the one in force until it is done\n", strings.Join(keys, ", "))
		}
		tw := newTable(w)
		if d.Spec != nil {
			for _, kv := range specFields(d.Spec) {
				fmt.Fprintf(tw, "  %s\t%s\n", kv[0], kv[1])
			}
			if home != "" {
				fmt.Fprintf(tw, "  logs\t%s\n", filepath.Join(logs.Dir(home), name+"-<N>-{out,err}.log"))
			}
		}
		if len(d.Sockets) > 0 {
			fmt.Fprintf(tw, "  sockets\t%s\n", strings.Join(d.Sockets, ", "))
		}
		if d.Containment != "" {
			fmt.Fprintf(tw, "  containment\t%s\n", d.Containment)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(d.Instances) > 0 {
			fmt.Fprintln(w)
			var buf bytes.Buffer
			if err := writeInstances(&buf, d.Instances, now); err != nil {
				return err
			}
			w.Write(indent(buf.Bytes(), "  "))
		}
		if len(d.Triggers) > 0 {
			fmt.Fprintln(w, "\n  triggers:")
			tw := newTable(w)
			for _, t := range d.Triggers {
				last := "never fired"
				if t.LastFired != nil {
					last = fmt.Sprintf("fired %d× (last %s)", t.Count, ago(*t.LastFired, now))
				}
				fmt.Fprintf(tw, "    %s\t%s\t%s\n", t.Kind, t.Detail, last)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(d.Exits) > 0 {
			fmt.Fprintln(w, "\n  recent exits:")
			tw := newTable(w)
			for _, e := range d.Exits {
				fmt.Fprintf(tw, "    %s\t%s:%d\tpid %d\t%s\n", stamp(e.Exit.At), name, e.Instance, e.Pid, e.Exit.String())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if c := d.LatestCrash; c != nil {
			fmt.Fprintf(w, "\n  latest crash: %s (%d×, last %s) — keel crash %s\n", oneline.Fold(c.Title, 0), c.Count, ago(c.LastSeen, now), c.ID)
		}
	}
	return nil
}

// specFields renders an app spec as (config key, value) pairs, in the
// order of config.Options, leaving out unset options.
func specFields(app any) [][2]string {
	b, err := json.Marshal(app)
	if err != nil {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	var out [][2]string
	seen := map[string]bool{}
	add := func(key string, kind config.Kind) {
		raw, ok := m[key]
		if !ok || seen[key] {
			return
		}
		seen[key] = true
		v := renderValue(raw)
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && kind == config.Size {
			v = spec.Size(n).String()
		}
		if v != "" {
			out = append(out, [2]string{key, v})
		}
	}
	for _, o := range config.Options() {
		add(o.Key, o.Kind)
	}
	rest := make([]string, 0, len(m))
	for k := range m {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		add(k, 0)
	}
	return out
}

// renderValue writes a JSON value for people: strings bare, lists
// space-separated (quoted when needed), maps as K=V, zero values as "".
func renderValue(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		if !x {
			return ""
		}
		return "true"
	case float64:
		if x == 0 {
			return ""
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		words := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				words = append(words, s)
			} else {
				b, _ := json.Marshal(e)
				words = append(words, string(b))
			}
		}
		return joinQuoted(words)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%v", k, x[k]))
		}
		return joinQuoted(parts)
	}
	return string(raw)
}

func indent(b []byte, prefix string) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) > 0 {
			out.WriteString(prefix)
			out.Write(line)
		}
	}
	return out.Bytes()
}

// writeCrashes prints the `keel crashes` table.
func writeCrashes(w io.Writer, groups []api.CrashGroup, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tAPP\tCOUNT\tLAST SEEN\tTITLE")
	for _, g := range groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", g.ID, g.App, g.Count, ago(g.LastSeen, now), oneline.Fold(g.Title, 0))
	}
	return tw.Flush()
}

// writeCrash prints `keel crash <id>`: the group, its latest stack and the
// exits it covers.
func writeCrash(w io.Writer, d api.CrashDetail, now time.Time) error {
	fmt.Fprintf(w, "crash %s of %s", d.ID, d.App)
	if d.Kind != "" {
		fmt.Fprintf(w, " (%s)", d.Kind)
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintf(tw, "  title\t%s\n", oneline.Fold(d.Title, 0))
	fmt.Fprintf(tw, "  seen\t%d× — first %s, last %s (%s)\n", d.Count, stamp(d.FirstSeen), stamp(d.LastSeen), ago(d.LastSeen, now))
	fmt.Fprintf(tw, "  signature\t%s\n", d.Signature)
	if err := tw.Flush(); err != nil {
		return err
	}
	if d.LastStack != "" {
		fmt.Fprintln(w, "\nlatest stack:")
		w.Write(indent([]byte(strings.TrimRight(d.LastStack, "\n")+"\n"), "  "))
	}
	if len(d.Exits) > 0 {
		fmt.Fprintln(w, "\nexits:")
		tw := newTable(w)
		for _, e := range d.Exits {
			fmt.Fprintf(tw, "  %s\t%s:%d\tpid %d\t%s\n", stamp(e.Exit.At), d.App, e.Instance, e.Pid, e.Exit.String())
		}
		return tw.Flush()
	}
	return nil
}
