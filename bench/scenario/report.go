package scenario

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/keel-run/keel/bench/load"
)

// Targets from issue 3.
const (
	// KillSuccessTarget: the share of requests that must succeed while one
	// instance is SIGKILLed every second.
	KillSuccessTarget = 0.999
	// ShareMin and ShareMax bound each instance's share of the requests.
	ShareMin, ShareMax = 0.35, 0.65
)

// Median of xs (0 for none); xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MinMax of xs (0, 0 for none).
func MinMax(xs []float64) (lo, hi float64) {
	for i, x := range xs {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

// Group is the runs of one scenario, app and manager, in run order.
type Group struct {
	Scenario, App, Manager string
	Runs                   []*Run
}

// Groups gathers runs by scenario, app and manager, in first-seen order.
func Groups(runs []*Run) []*Group {
	var gs []*Group
	idx := map[[3]string]*Group{}
	for _, r := range runs {
		k := [3]string{r.Scenario, r.App, r.Manager}
		g := idx[k]
		if g == nil {
			g = &Group{Scenario: r.Scenario, App: r.App, Manager: r.Manager}
			idx[k] = g
			gs = append(gs, g)
		}
		g.Runs = append(g.Runs, r)
	}
	return gs
}

// results is the load results of the runs that got that far.
func (g *Group) results() []*load.Result {
	var rs []*load.Result
	for _, r := range g.Runs {
		if r.Result != nil {
			rs = append(rs, r.Result)
		}
	}
	return rs
}

func (g *Group) errs() []string {
	var es []string
	for i, r := range g.Runs {
		for _, e := range r.Errs {
			es = append(es, fmt.Sprintf("run %d: %s", i+1, e))
		}
	}
	return es
}

// rps is the req/s of each run that measured.
func (g *Group) rps() []float64 {
	var xs []float64
	for _, r := range g.results() {
		xs = append(xs, r.RPS)
	}
	return xs
}

// Kinds sums the failures of rs by kind, as "reset 230, closed 33" in
// load.Kinds order, or "-" for none.
func Kinds(rs []*load.Result) string {
	var parts []string
	for _, k := range load.Kinds() {
		var n int64
		for _, r := range rs {
			n += r.Failed[k.String()]
		}
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// Success is the fraction of r's requests that succeeded (1 for none).
func Success(r *load.Result) float64 {
	if r.Requests == 0 {
		return 1
	}
	return float64(r.OK) / float64(r.Requests)
}

// Met says whether the group meets its scenario's target, and if not, why.
func (g *Group) Met(spec Spec) (bool, string) {
	rs := g.results()
	if len(rs) < len(g.Runs) {
		return false, "a run failed before the load"
	}
	for _, r := range g.Runs {
		if len(r.Errs) > 0 {
			return false, "errors (below)"
		}
	}
	switch g.Scenario {
	case ScenarioReload:
		for _, r := range g.Runs {
			if r.Result.Failures() > 0 {
				return false, "failed requests"
			}
			if r.Ops < spec.Reloads || r.Replaced < spec.N*spec.Reloads {
				return false, fmt.Sprintf("replaced %d of %d instances", r.Replaced, spec.N*spec.Reloads)
			}
		}
		return true, "0 failed"
	case ScenarioKill:
		for _, r := range g.Runs {
			if Success(r.Result) < KillSuccessTarget {
				return false, fmt.Sprintf("%.3f %% < %.1f %%", 100*Success(r.Result), 100*KillSuccessTarget)
			}
		}
		return true, fmt.Sprintf("≥ %.1f %%", 100*KillSuccessTarget)
	case ScenarioCrash, ScenarioNoCrash:
		for _, r := range g.Runs {
			if r.Result.Failures() > 0 {
				return false, "failed normal requests"
			}
		}
		return true, "0 failed normal requests"
	}
	return true, ""
}

func seconds(ds []time.Duration) []float64 {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = d.Seconds()
	}
	return xs
}

func rangeOf(xs []float64, format string) string {
	if len(xs) == 0 {
		return "-"
	}
	lo, hi := MinMax(xs)
	if len(xs) == 1 {
		return fmt.Sprintf(format, xs[0])
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", Median(xs), lo, hi)
}

// LoadTable is the Markdown table of reload and kill groups.
func LoadTable(gs []*Group, specs map[string]Spec) string {
	var b strings.Builder
	b.WriteString("| scenario | app | manager | runs | requests (median) | failed, each run | failed by kind, all runs | success, worst run | req/s median (min–max) | reloads / kills | target |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	var notes []string
	for _, g := range gs {
		if g.Scenario != ScenarioReload && g.Scenario != ScenarioKill {
			continue
		}
		spec := specs[g.Scenario]
		rs := g.results()
		var reqs []float64
		var failed []string
		worst := 1.0
		for _, r := range g.Runs {
			if r.Result == nil {
				failed = append(failed, "n/a")
				continue
			}
			reqs = append(reqs, float64(r.Result.Requests))
			failed = append(failed, fmt.Sprint(r.Result.Failures()))
			worst = min(worst, Success(r.Result))
		}
		ops := opsText(g, spec)
		ok, why := g.Met(spec)
		mark := "**yes** " + why
		if !ok {
			mark = "**NO**: " + why
		}
		succ := "-"
		if len(rs) > 0 {
			succ = fmt.Sprintf("%.3f %%", 100*worst)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
			g.Scenario, g.App, g.Manager, len(g.Runs), medianText(reqs),
			strings.Join(failed, " / "), Kinds(rs), succ, rangeOf(g.rps(), "%.0f"), ops, mark)
		for i, r := range g.Runs {
			if r.CrashGroups != nil {
				notes = append(notes, fmt.Sprintf("- %s %s run %d: %s", g.App, g.Manager, i+1, CrashGroupsText(r.CrashGroups)))
			}
		}
		for _, e := range g.errs() {
			notes = append(notes, fmt.Sprintf("- %s %s %s, %s", g.Scenario, g.App, g.Manager, e))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

func medianText(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", Median(xs))
}

func opsText(g *Group, spec Spec) string {
	var ops, replaced, skipped int
	var times []time.Duration
	restarts := []string{}
	for _, r := range g.Runs {
		ops += r.Ops
		replaced += r.Replaced
		skipped += r.Skipped
		times = append(times, r.OpTimes...)
		if r.Restarts >= 0 {
			restarts = append(restarts, fmt.Sprint(r.Restarts))
		}
	}
	n := len(g.Runs)
	switch g.Scenario {
	case ScenarioReload:
		return fmt.Sprintf("%d reloads, each %s s, replaced %d/%d", ops, rangeOf(seconds(times), "%.2f"), replaced, spec.N*spec.Reloads*n)
	case ScenarioKill:
		s := fmt.Sprintf("%d kills", ops)
		if skipped > 0 {
			s += fmt.Sprintf(" (%d hit a restarting slot)", skipped)
		}
		if len(restarts) > 0 {
			s += ", restarts " + strings.Join(restarts, " / ")
		}
		return s
	}
	return ""
}

// Shares is each instance's share of r's OK requests, by instance id.
func Shares(r *load.Result) map[string]float64 {
	m := map[string]float64{}
	for id := range r.Instances {
		m[id] = r.Share(id)
	}
	return m
}

// ShareText is "0: 48.1–51.2 %, 1: 48.8–51.9 %": each instance's share over
// the runs, and whether every share of every run lies in [ShareMin,
// ShareMax].
func ShareText(rs []*load.Result) (string, bool) {
	byID := map[string][]float64{}
	for _, r := range rs {
		for id, s := range Shares(r) {
			byID[id] = append(byID[id], s)
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fair := true
	var parts []string
	for _, id := range ids {
		xs := byID[id]
		for i := range xs {
			xs[i] *= 100
		}
		lo, hi := MinMax(xs)
		if lo < 100*ShareMin || hi > 100*ShareMax || len(xs) < len(rs) {
			fair = false
		}
		name := id
		if name == "" {
			name = "?"
		}
		if lo == hi {
			parts = append(parts, fmt.Sprintf("%s: %.1f %%", name, lo))
		} else {
			parts = append(parts, fmt.Sprintf("%s: %.1f–%.1f %%", name, lo, hi))
		}
	}
	return strings.Join(parts, ", "), fair
}

// ThroughputTable is the Markdown table of the throughput groups: req/s,
// ratio to the direct process, each instance's share, and for keel the
// per-run ratio to every other multi-instance mode (measured in the same
// run) with the targets: keel ≥ node cluster and ≥ pm2, shares in
// [ShareMin, ShareMax].
func ThroughputTable(gs []*Group) string {
	var tg []*Group
	for _, g := range gs {
		if g.Scenario == ScenarioThroughput {
			tg = append(tg, g)
		}
	}
	if len(tg) == 0 {
		return ""
	}
	byName := map[string]*Group{}
	for _, g := range tg {
		byName[g.Manager] = g
	}
	var b strings.Builder
	b.WriteString("| mode | runs | req/s median (min–max) | × direct, per run | server CPU per request | cores busy: server + load client | instance shares (min–max over runs) | target |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	var notes []string
	for _, g := range tg {
		shares, fair := ShareText(g.results())
		ratio := "-"
		if d := byName["direct"]; d != nil && g.Manager != "direct" {
			ratio = ratios(g, d)
		}
		target := ""
		if g.Manager == "keel" {
			met, why := keelThroughput(tg)
			if met {
				target = "**yes**: " + why
			} else {
				target = "**NO**: " + why
			}
		} else if g.Manager == SameSessionCluster {
			target = "(reference, not a target: shares the load client's CPU group)"
		} else if g.Manager != "direct" && !fair {
			target = "(a share outside 35–65 %)"
		}
		perReq, cores := cpuText(g)
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", g.Manager, len(g.Runs), rangeOf(g.rps(), "%.0f"), ratio, perReq, cores, shares, target)
		for _, e := range g.errs() {
			notes = append(notes, fmt.Sprintf("- throughput %s, %s", g.Manager, e))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// cpuText is the median server CPU per OK request ("21.3 µs (20.1–22.0)")
// and the median cores kept busy by the server and by the load client
// ("1.12 + 0.80"), over the runs that measured them.
func cpuText(g *Group) (perReq, cores string) {
	var us, sc, cc []float64
	for _, r := range g.Runs {
		if r.Result == nil || r.ServerCPU <= 0 || r.Result.OK == 0 || r.Result.Elapsed <= 0 {
			continue
		}
		us = append(us, float64(r.ServerCPU.Microseconds())/float64(r.Result.OK))
		sc = append(sc, r.ServerCPU.Seconds()/r.Result.Elapsed.Seconds())
		cc = append(cc, r.ClientCPU.Seconds()/r.Result.Elapsed.Seconds())
	}
	if len(us) == 0 {
		return "-", "-"
	}
	return rangeOf(us, "%.1f") + " µs", fmt.Sprintf("%.2f + %.2f", Median(sc), Median(cc))
}

// ThroughputMet says whether keel's throughput row (if any) meets its
// targets.
func ThroughputMet(gs []*Group) bool {
	var tg []*Group
	for _, g := range gs {
		if g.Scenario == ScenarioThroughput {
			tg = append(tg, g)
		}
	}
	ok, _ := keelThroughput(tg)
	return ok
}

// keelThroughput checks keel's throughput targets among the throughput
// groups tg: the median of keel's per-run req/s ratio to each other
// multi-instance mode is at least 1, and every instance's share in every
// run lies in [ShareMin, ShareMax]. Without a keel group it is met.
func keelThroughput(tg []*Group) (bool, string) {
	var keel *Group
	for _, g := range tg {
		if g.Manager == "keel" {
			keel = g
		}
	}
	if keel == nil {
		return true, ""
	}
	met := len(keel.Runs) > 0 && len(keel.results()) == len(keel.Runs)
	var parts []string
	for _, other := range tg {
		if other.Manager == "keel" || other.Manager == "direct" || other.Manager == SameSessionCluster {
			continue
		}
		rs := perRun(keel, other)
		if len(rs) == 0 || Median(rs) < 1 {
			met = false
		}
		parts = append(parts, fmt.Sprintf("keel ÷ %s %s", other.Manager, ratioList(rs)))
	}
	if _, fair := ShareText(keel.results()); !fair {
		met = false
		parts = append(parts, "a share outside 35–65 %")
	}
	return met, strings.Join(parts, "; ")
}

// PackageVersion is the "version" of a package.json ("?" if none).
func PackageVersion(b []byte) string {
	var p struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &p) != nil || p.Version == "" {
		return "?"
	}
	return p.Version
}

// perRun is a's req/s divided by b's, run by run (runs where both measured).
func perRun(a, b *Group) []float64 {
	var xs []float64
	for i, r := range a.Runs {
		if i < len(b.Runs) && r.Result != nil && b.Runs[i].Result != nil && b.Runs[i].Result.RPS > 0 {
			xs = append(xs, r.Result.RPS/b.Runs[i].Result.RPS)
		}
	}
	return xs
}

func ratios(a, b *Group) string { return ratioList(perRun(a, b)) }

// ratioList is "1.02 0.97 1.05 (median 1.02)".
func ratioList(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	if len(xs) == 1 {
		return parts[0]
	}
	return fmt.Sprintf("%s (median %.2f)", strings.Join(parts, " "), Median(xs))
}

// CrashTable is the Markdown table of the crash scenario: per manager, the
// normal requests that failed, what each crashing route's requests got,
// the restarts, and req/s against the same load without the crashing
// requests (ScenarioNoCrash). Empty when no crash group ran.
func CrashTable(gs []*Group) string {
	var b strings.Builder
	var notes []string
	for _, g := range gs {
		if g.Scenario != ScenarioCrash {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("| app | manager | runs | normal requests (median) | failed normal, each run | failed by kind, all runs | crashing requests got, all runs | restarts, each run | req/s median (min–max) | ÷ no-crash req/s (median) | target |\n")
			b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		}
		rs := g.results()
		var reqs []float64
		var failed, restarts []string
		for _, r := range g.Runs {
			if r.Restarts >= 0 {
				restarts = append(restarts, fmt.Sprint(r.Restarts))
			}
			if r.Result == nil {
				failed = append(failed, "n/a")
				continue
			}
			reqs = append(reqs, float64(r.Result.Requests))
			failed = append(failed, fmt.Sprint(r.Result.Failures()))
		}
		ratio := "-"
		for _, base := range gs {
			if base.Scenario == ScenarioNoCrash && base.App == g.App && base.Manager == g.Manager && len(base.rps()) > 0 {
				ratio = fmt.Sprintf("%.2f (%.0f)", Median(g.rps())/Median(base.rps()), Median(base.rps()))
			}
		}
		ok, why := g.Met(Spec{})
		mark := "**yes** " + why
		if !ok {
			mark = "**NO**: " + why
		}
		if g.Manager != "keel" {
			mark = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			g.App, g.Manager, len(g.Runs), medianText(reqs), strings.Join(failed, " / "), Kinds(rs),
			SpecialsText(rs), strings.Join(restarts, " / "), rangeOf(g.rps(), "%.0f"), ratio, mark)
		for i, r := range g.Runs {
			if r.CrashGroups != nil {
				notes = append(notes, fmt.Sprintf("- %s %s run %d: %s", g.App, g.Manager, i+1, CrashGroupsText(r.CrashGroups)))
			}
		}
		for _, e := range g.errs() {
			notes = append(notes, fmt.Sprintf("- %s %s %s, %s", g.Scenario, g.App, g.Manager, e))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// CrashGroupsText is how a run's crashes were filed: "7 crashes in 2
// groups: "TypeError: x" ×4, "Error: y" ×3".
func CrashGroupsText(gs []CrashGroup) string {
	n := 0
	parts := make([]string, 0, len(gs))
	for _, g := range gs {
		n += g.Count
		parts = append(parts, fmt.Sprintf("%q ×%d", g.Title, g.Count))
	}
	return fmt.Sprintf("%d crashes in %d groups: %s", n, len(gs), strings.Join(parts, ", "))
}

// SpecialsText sums what each special path's requests got over rs:
// "/throw: 500 ×41, reset 2; /reject: 500 ×40".
func SpecialsText(rs []*load.Result) string {
	type tally struct {
		status map[int]int64
		failed map[string]int64
	}
	var paths []string
	by := map[string]*tally{}
	for _, r := range rs {
		for _, s := range r.Specials {
			t := by[s.Path]
			if t == nil {
				t = &tally{status: map[int]int64{}, failed: map[string]int64{}}
				by[s.Path] = t
				paths = append(paths, s.Path)
			}
			for c, n := range s.Status {
				t.status[c] += n
			}
			for k, n := range s.Failed {
				t.failed[k] += n
			}
		}
	}
	var parts []string
	for _, p := range paths {
		t := by[p]
		var got []string
		codes := make([]int, 0, len(t.status))
		for c, n := range t.status {
			if n > 0 {
				codes = append(codes, c)
			}
		}
		sort.Ints(codes)
		for _, c := range codes {
			got = append(got, fmt.Sprintf("%d ×%d", c, t.status[c]))
		}
		for _, k := range load.Kinds() {
			if n := t.failed[k.String()]; n > 0 {
				got = append(got, fmt.Sprintf("%s %d", k, n))
			}
		}
		if len(got) == 0 {
			got = []string{"none sent"}
		}
		parts = append(parts, p+": "+strings.Join(got, ", "))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}
