package main

import (
	"fmt"
	"io"
	"strings"
)

// print writes one table per goal of issue 14 (keel and pm2 side by
// side, each goal evaluated for keel), then every row as measured.
func (res results) print(w io.Writer) {
	if len(res.counts) > 0 {
		res.printMemory(w)
	}
	if len(res.counts)+len(res.reloads)+len(res.serving)+len(res.logs) > 0 {
		res.printScale(w)
	}
	if len(res.counts) > 0 {
		res.printRows(w)
	}
}

// find returns the row of manager at n instances in apps apps.
func (res results) find(manager string, n, apps int) (row, bool) {
	for _, r := range res.counts {
		if r.manager == manager && r.count == n && r.apps == apps && r.err == nil {
			return r, true
		}
	}
	return row{}, false
}

// layouts lists the (count, apps) pairs measured, in order.
func (res results) layouts() [][2]int {
	var out [][2]int
	seen := map[[2]int]bool{}
	for _, r := range res.counts {
		k := [2]int{r.count, r.apps}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// Goal 1: manager memory below pm2's at every count; ≤ 1/3 of pm2's at
// 200 instances, ≤ 1/2 at 1,000.
func (res results) printMemory(w io.Writer) {
	fmt.Fprintln(w, "Goal 1: manager memory (daemon + keepers; pm2: its daemon), PSS; and the anonymous part")
	fmt.Fprintln(w, "(RssAnon: heap and stacks, which no other process on the box can share)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| instances | apps | keel MB | pm2 MB | keel / pm2 | goal | keel meets it | keel anon MB | pm2 anon MB | anon keel / pm2 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, l := range res.layouts() {
		n, apps := l[0], l[1]
		k, kok := res.find("keel", n, apps)
		p, pok := res.find("pm2", n, apps)
		goal, limit := "< 1", 1.0
		switch n {
		case 200:
			goal, limit = "≤ 1/3", 1.0/3
		case 1000:
			goal, limit = "≤ 1/2", 0.5
		}
		cells := []string{fmt.Sprint(n), fmt.Sprint(apps), "failed", "–", "–", goal, "–", "failed", "–", "–"}
		if kok {
			cells[2] = fmt.Sprintf("%.1f", mb(k.mem.PSS))
			cells[7] = fmt.Sprintf("%.1f", mb(k.mem.Anon))
		}
		if pok {
			cells[3] = fmt.Sprintf("%.1f", mb(p.mem.PSS))
			cells[8] = fmt.Sprintf("%.1f", mb(p.mem.Anon))
		} else if res.withPM2 {
			cells[3], cells[8] = "failed", "failed"
		}
		if kok && pok && p.mem.Anon > 0 {
			cells[9] = fmt.Sprintf("%.2f", float64(k.mem.Anon)/float64(p.mem.Anon))
		}
		if kok && pok {
			ratio := float64(k.mem.PSS) / float64(p.mem.PSS)
			cells[4] = fmt.Sprintf("%.2f", ratio)
			ok := ratio < limit
			if limit < 1 {
				ok = ratio <= limit
			}
			cells[6] = yesNo(ok)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	fmt.Fprintln(w)
}

// Goal 2: 1,000 instances (the largest count measured): online within 2×
// the kernel's fork/exec, ls --json ≤ 10× its time with 4, idle CPU ≤ 1 %
// of a core; a reload of 100 completes; writers lose 0 lines.
func (res results) printScale(w io.Writer) {
	fmt.Fprintln(w, "Goal 2: many instances")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| check | goal | keel | pm2 | keel meets it |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	line := func(check, goal, keel, pm2, met string) {
		if !res.withPM2 {
			pm2 = "–"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", check, goal, keel, pm2, met)
	}
	max := 0
	for _, r := range res.counts {
		max = maxInt(max, r.count)
	}
	for _, l := range res.layouts() {
		n, apps := l[0], l[1]
		if n != max {
			continue
		}
		k, kok := res.find("keel", n, apps)
		p, pok := res.find("pm2", n, apps)
		online := func(r row, ok bool) string {
			if !ok {
				return "failed"
			}
			return fmt.Sprintf("%.1f s = %.1f× fork/exec (%.1f s)", r.online.Seconds(), ratio(r.online, r.forkExec), r.forkExec.Seconds())
		}
		met := "–"
		if kok {
			met = yesNo(k.online <= 2*k.forkExec)
		}
		line(fmt.Sprintf("`start` of %d instances in %d app(s): all online", n, apps), "≤ 2× fork/exec", online(k, kok), online(p, pok), met)
	}
	for _, l := range res.layouts() {
		n, apps := l[0], l[1]
		if n != max || n == 4 {
			continue
		}
		list := func(m string) (string, bool, bool) {
			r, ok := res.find(m, n, apps)
			base, bok := res.find(m, 4, 1)
			switch {
			case !ok:
				return "failed", false, false
			case !bok:
				return fmt.Sprintf("%.0f ms (no 4-instance row)", ms(r.list)), false, false
			}
			x := ratio(r.list, base.list)
			return fmt.Sprintf("%.0f ms = %.1f× (%.0f ms at 4)", ms(r.list), x, ms(base.list)), x <= 10, true
		}
		ks, kmet, kok := list("keel")
		ps, _, _ := list("pm2")
		met := "–"
		if kok {
			met = yesNo(kmet)
		}
		line(fmt.Sprintf("`ls --json` (`pm2 jlist`) with %d instances in %d app(s)", n, apps), "≤ 10× with 4", ks, ps, met)
	}
	for _, l := range res.layouts() {
		n, apps := l[0], l[1]
		if n != max {
			continue
		}
		k, kok := res.find("keel", n, apps)
		p, pok := res.find("pm2", n, apps)
		cpu := func(r row, ok bool) string {
			if !ok {
				return "failed"
			}
			return fmt.Sprintf("%.2f %%", r.idleCPU)
		}
		met := "–"
		if kok {
			met = yesNo(k.idleCPU <= 1)
		}
		line(fmt.Sprintf("idle CPU, %d instances in %d app(s)", n, apps), "≤ 1 % of a core", cpu(k, kok), cpu(p, pok), met)
	}
	if len(res.reloads) > 0 {
		cells, met, n := map[string]string{"keel": "not run", "pm2": "not run"}, "–", 0
		for _, r := range res.reloads {
			n = r.n
			if r.err != nil {
				cells[r.manager] = "failed: " + firstLine(r.err)
			} else {
				cells[r.manager] = fmt.Sprintf("completes: command %.1f s, all in new processes at %.1f s", r.command.Seconds(), r.settled.Seconds())
			}
			if r.manager == "keel" {
				met = yesNo(r.err == nil)
			}
		}
		line(fmt.Sprintf("`reload` of an app of %d instances (/bin/sleep)", n), "completes", cells["keel"], cells["pm2"], met)
	}
	for _, app := range []string{"go", "hello"} {
		cells, met, n, any := map[string]string{"keel": "not run", "pm2": "not run (cluster mode is for Node)"}, "–", 0, false
		for _, r := range res.serving {
			if r.app != app {
				continue
			}
			any, n = true, r.n
			if r.err != nil {
				cells[r.manager] = "failed: " + firstLine(r.err)
			} else {
				cells[r.manager] = fmt.Sprintf("completes: %.1f s, %d of %d replaced, %d of %d requests failed",
					r.command.Seconds(), r.replaced, r.n, r.failed, r.requests)
			}
			if r.manager == "keel" {
				met = yesNo(r.err == nil && r.replaced == r.n)
			}
		}
		if any {
			line(fmt.Sprintf("`reload` of %d instances of %s serving on one port, under load", n, app), "completes", cells["keel"], cells["pm2"], met)
		}
	}
	if len(res.logs) > 0 {
		cells, met, n, perSec := map[string]string{"keel": "not run", "pm2": "not run"}, "–", 0, 0
		var rate string
		for _, r := range res.logs {
			n, perSec = r.instances, r.rate
			switch {
			case r.err != nil:
				cells[r.manager] = "failed: " + firstLine(r.err)
			default:
				cells[r.manager] = fmt.Sprintf("%d lost of %d (%d writers with gaps, %d duplicated)",
					r.loss.Lost, r.loss.Written, r.loss.WithGaps, r.loss.Duplicates)
			}
			if r.manager == "keel" {
				met = yesNo(r.err == nil && r.loss.Lost == 0 && r.loss.Written > 0)
			}
			if r.err == nil && r.done > 0 && rate == "" {
				rate = fmt.Sprintf("%d lines each", r.loss.Written/r.done)
			}
		}
		line(fmt.Sprintf("%d instances writing %d lines/s (%s)", n, perSec, rate), "0 lost", cells["keel"], cells["pm2"], met)
	}
	fmt.Fprintln(w)
	for _, r := range res.serving {
		if r.err == nil {
			fmt.Fprintf(w, "- reload of %s under load, %s: %s\n", r.app, r.manager, r)
		}
	}
	for _, r := range res.logs {
		if r.err == nil {
			fmt.Fprintf(w, "- writers, %s: %s\n", r.manager, r)
		}
	}
	if len(res.serving)+len(res.logs) > 0 {
		fmt.Fprintln(w)
	}
}

// printRows writes every count row as measured.
func (res results) printRows(w io.Writer) {
	fmt.Fprintln(w, "Every row (/bin/sleep instances)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| instances | apps | manager | online s | fork/exec s | PSS MB | PSS KB / instance | anon MB | keepers | ls ms | idle CPU % | stop s |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range res.counts {
		if r.err != nil {
			fmt.Fprintf(w, "| %d | %d | %s | failed: %s |||||||||\n", r.count, r.apps, r.manager, firstLine(r.err))
			continue
		}
		helpers := "–"
		if r.manager == "keel" {
			helpers = fmt.Sprint(r.helpers)
		}
		fmt.Fprintf(w, "| %d | %d | %s | %.2f | %.2f | %.1f | %.0f | %.1f | %s | %.1f | %.2f | %.2f |\n", r.count, r.apps, r.manager,
			r.online.Seconds(), r.forkExec.Seconds(), mb(r.mem.PSS), float64(r.mem.PSS)/1024/float64(r.count),
			mb(r.mem.Anon), helpers, ms(r.list), r.idleCPU, r.stop.Seconds())
	}
	fmt.Fprintln(w)
}

func ratio[T ~int64](a, b T) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
