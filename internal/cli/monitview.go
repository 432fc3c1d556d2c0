package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SGR parameters the view uses.
const (
	sgrBold    = "1"
	sgrDim     = "2"
	sgrReverse = "7"
	sgrRed     = "31"
	sgrGreen   = "32"
	sgrYellow  = "33"
	sgrCyan    = "36"
)

// span is text drawn in one style (SGR parameters, "" for plain).
type span struct{ text, sgr string }

// styled is one screen line; fill, when set, pads it to the full width in
// that style (the selected row is a reverse-video bar).
type styled struct {
	spans []span
	fill  string
}

func plain(s string) styled { return styled{spans: []span{{text: s}}} }

func (l *styled) add(text, sgr string) *styled {
	l.spans = append(l.spans, span{text, sgr})
	return l
}

// render writes l cut to width columns, with escapes when ansi; without
// color, colour parameters are left out (bold, dim and reverse stay).
func (l styled) render(width int, ansi, color bool) string {
	var b strings.Builder
	n := 0
	for _, s := range l.spans {
		if n >= width {
			break
		}
		text, w := cut(s.text, width-n)
		n += w
		sgr := s.sgr
		if l.fill != "" {
			sgr = join(l.fill, sgr)
		}
		writeSGR(&b, text, sgr, ansi, color)
	}
	if l.fill != "" && n < width {
		writeSGR(&b, strings.Repeat(" ", width-n), l.fill, ansi, color)
	}
	return b.String()
}

func join(a, b string) string {
	if b == "" {
		return a
	}
	return a + ";" + b
}

func writeSGR(b *strings.Builder, text, sgr string, ansi, color bool) {
	if !color {
		var keep []string
		for _, p := range strings.Split(sgr, ";") {
			if p == sgrBold || p == sgrDim || p == sgrReverse {
				keep = append(keep, p)
			}
		}
		sgr = strings.Join(keep, ";")
	}
	if !ansi || sgr == "" {
		b.WriteString(text)
		return
	}
	b.WriteString("\x1b[" + sgr + "m" + text + "\x1b[0m")
}

// cut returns the longest prefix of s that fits in width columns, and its
// width.
func cut(s string, width int) (string, int) {
	n := 0
	for i, r := range s {
		w := runeWidth(r)
		if n+w > width {
			return s[:i], n
		}
		n += w
	}
	return s, n
}

// textWidth is how many columns s takes.
func textWidth(s string) int {
	_, n := cut(s, 1<<30)
	return n
}

// runeWidth is 2 for the East Asian wide and emoji blocks, else 1: enough
// to keep log lines in other scripts from overflowing their line.
func runeWidth(r rune) int {
	switch {
	case r >= 0x1100 && r <= 0x115f, r >= 0x2e80 && r <= 0xa4cf && r != 0x303f,
		r >= 0xac00 && r <= 0xd7a3, r >= 0xf900 && r <= 0xfaff, r >= 0xfe30 && r <= 0xfe4f,
		r >= 0xff00 && r <= 0xff60, r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f, r >= 0x1f900 && r <= 0x1f9ff, r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}

// pad fills s with spaces to width columns (cutting it if longer).
func pad(s string, width int) string {
	s, n := cut(s, width)
	return s + strings.Repeat(" ", width-n)
}

// padLeft right-aligns s in width columns.
func padLeft(s string, width int) string {
	s, n := cut(s, width)
	return strings.Repeat(" ", width-n) + s
}

// rule is a horizontal line with a title: "── title ─────".
func rule(title string, width int) styled {
	var l styled
	l.add("── ", sgrDim).add(title, sgrBold).add(" "+strings.Repeat("─", max(width-textWidth(title)-4, 0)), sgrDim)
	return l
}

// sparkBlocks are the eight heights of a sparkline cell (an array: static
// data, nothing to build at init).
var sparkBlocks = [...]rune{'▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'}

// sparkline draws the last width values as block characters scaled from 0
// to top, newest on the right; the left is blank when there are fewer
// values than cells.
func sparkline(vals []float64, top float64, width int) string {
	if width <= 0 {
		return ""
	}
	if len(vals) > width {
		vals = vals[len(vals)-width:]
	}
	var b strings.Builder
	b.WriteString(strings.Repeat(" ", width-len(vals)))
	for _, v := range vals {
		i := 0
		if top > 0 && v > 0 {
			i = int(v / top * float64(len(sparkBlocks)-1))
			i = min(max(i, 0), len(sparkBlocks)-1)
			if i == 0 {
				i = 1 // a value above zero shows, however small
			}
		}
		b.WriteRune(sparkBlocks[i])
	}
	return b.String()
}

// Column widths of the app list.
const (
	colStatus   = 11
	colPid      = 8
	colCPU      = 8
	colMem      = 9
	colRestarts = 10
	colUptime   = 8
)

// view draws the whole screen: exactly m.height lines of at most m.width
// columns each.
func (m *monitModel) view(ansi bool) []string {
	var lines []styled
	lines = append(lines, m.titleLine())

	nameW := 4
	for _, r := range m.rows {
		nameW = max(nameW, textWidth(m.rowName(r)))
	}
	nameW = min(nameW, 32) + 2
	var head styled
	head.add("  "+pad("NAME", nameW)+pad("STATUS", colStatus)+padLeft("PID", colPid)+padLeft("CPU", colCPU)+
		padLeft("MEM", colMem)+padLeft("RESTARTS", colRestarts)+padLeft("UPTIME", colUptime)+"  INFO", sgrDim)
	lines = append(lines, head)

	listH := m.listHeight()
	switch {
	case !m.loaded && m.listErr == nil:
		lines = append(lines, plain("  asking the daemon…"))
	case len(m.rows) == 0 && m.loaded:
		lines = append(lines, plain("  no apps yet: start one with 'keel start <script|binary|config>'"))
	}
	for i := m.top; i < len(m.rows) && i < m.top+listH; i++ {
		lines = append(lines, m.rowLine(m.rows[i], nameW, i == m.sel))
	}
	for len(lines) < 2+listH {
		lines = append(lines, styled{})
	}

	r, ok := m.selected()
	lines = append(lines, m.charts(r, ok)...)

	logH := m.height - len(lines) - 2
	title := "logs"
	if ok {
		title = "logs: " + r.key
	}
	if m.filter != "" {
		title += " · lines with “" + screenSafe(m.filter) + "”"
	}
	lines = append(lines, rule(title, m.width))
	if logH > 0 {
		shown := m.shownLogs()
		if len(shown) > logH {
			shown = shown[len(shown)-logH:]
		}
		if ok && len(shown) == 0 {
			var l styled
			if len(m.logs) > 0 {
				l.add("  no line matches the filter (esc clears it)", sgrDim)
			} else {
				l.add("  no log lines yet", sgrDim)
			}
			lines = append(lines, l)
		}
		instW := 0
		for _, ll := range shown {
			instW = max(instW, len(ll.inst))
		}
		for _, ll := range shown {
			var l styled
			l.add(pad(ll.inst, instW)+" | ", sgrDim)
			if ll.stderr {
				l.add(ll.text, sgrRed)
			} else {
				l.add(ll.text, "")
			}
			lines = append(lines, l)
		}
	}
	for len(lines) < m.height-1 {
		lines = append(lines, styled{})
	}
	if len(lines) > m.height-1 {
		lines = lines[:max(m.height-1, 0)]
	}
	lines = append(lines, m.helpLine())

	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.render(m.width, ansi, m.color)
	}
	return out[:min(len(out), max(m.height, 1))]
}

func (m *monitModel) titleLine() styled {
	var l styled
	l.add(" keel monit ", sgrBold)
	if m.loaded {
		apps := map[string]bool{}
		online := 0
		for _, in := range m.insts {
			apps[in.App] = true
			if in.Status == "online" {
				online++
			}
		}
		l.add(fmt.Sprintf("  %d app%s · %d instance%s · %d online", len(apps), plural(len(apps)), len(m.insts), plural(len(m.insts)), online), "")
	}
	if m.listErr != nil {
		l.add("  daemon: "+oneLine(m.listErr.Error()), sgrRed)
	}
	clock := m.now.Format("15:04:05")
	used := 0
	for _, s := range l.spans {
		used += textWidth(s.text)
	}
	if gap := m.width - used - len(clock) - 1; gap > 0 {
		l.add(strings.Repeat(" ", gap)+clock, sgrDim)
	}
	return l
}

func oneLine(s string) string { return screenSafe(strings.ReplaceAll(s, "\n", " ")) }

func (m *monitModel) rowName(r monitRow) string {
	if r.instance < 0 {
		return r.app
	}
	last := true
	for _, o := range m.rows {
		if o.app == r.app && o.instance > r.instance {
			last = false
		}
	}
	if last {
		return "└ " + r.key
	}
	return "├ " + r.key
}

func statusStyle(s string) string {
	switch s {
	case "online":
		return sgrGreen
	case "starting", "stopping", "waiting":
		return sgrYellow
	case "errored":
		return sgrRed
	case "stopped":
		return sgrDim
	}
	return ""
}

// rowLine is one line of the app list.
func (m *monitModel) rowLine(r monitRow, nameW int, selected bool) styled {
	var l styled
	if selected {
		l.fill = sgrReverse
		l.add("› ", sgrBold)
	} else {
		l.add("  ", "")
	}
	nameSGR := ""
	if r.instance < 0 {
		nameSGR = sgrBold
	}
	l.add(pad(screenSafe(m.rowName(r)), nameW), nameSGR)

	pid, cpu, mem, up, info := "", "-", "-", "", ""
	var restarts, live, online int
	var cpuSum float64
	var memSum int64
	for _, in := range r.insts {
		restarts += in.Restarts
		if in.Pid > 0 {
			live++
			cpuSum += in.CPUPercent
			memSum += in.MemoryBytes
		}
		if in.Status == "online" {
			online++
		}
	}
	if live > 0 {
		cpu, mem = fmt.Sprintf("%.1f%%", cpuSum), humanBytes(memSum)
	}
	status := r.insts[0].Status
	sSGR := statusStyle(status)
	same := true
	for _, in := range r.insts {
		same = same && in.Status == status
	}
	if len(r.insts) > 1 && (!same || status == "online") {
		// An app row: how many of its instances are online.
		status = fmt.Sprintf("%d/%d online", online, len(r.insts))
		sSGR = sgrGreen
		if online < len(r.insts) {
			sSGR = sgrYellow
		}
	}
	if len(r.insts) == 1 {
		in := r.insts[0]
		if in.Pid > 0 {
			pid = strconv.Itoa(in.Pid)
			if in.UptimeMs > 0 {
				up = humanDuration(time.Duration(in.UptimeMs) * time.Millisecond)
			}
		}
		info = instanceInfo(in, m.now)
	}
	l.add(pad(status, colStatus), sSGR)
	l.add(padLeft(pid, colPid)+padLeft(cpu, colCPU)+padLeft(mem, colMem)+padLeft(strconv.Itoa(restarts), colRestarts)+padLeft(up, colUptime), "")
	if info != "" {
		l.add("  "+oneLine(info), sgrDim)
	}
	return l
}

// charts are the selected row's CPU and memory sparklines with a rule
// naming the row and the time they span.
func (m *monitModel) charts(r monitRow, ok bool) []styled {
	if !ok {
		return []styled{rule("CPU and memory", m.width), {}, {}, {}}
	}
	var h []sample
	if s := m.hist[r.key]; s != nil {
		h = s.s
	}
	shown := time.Duration(len(h)) * m.interval
	const labelW = 6
	suffixW := 26
	cells := max(m.width-labelW-suffixW, 0)
	if len(h) > cells {
		shown = time.Duration(cells) * m.interval
	}
	title := r.key + " · CPU and memory, last " + roundSpan(shown).String()
	cpus, mems := make([]float64, len(h)), make([]float64, len(h))
	var cpuMax, memMax float64
	for _, p := range h[max(len(h)-cells, 0):] { // the maxima of what is drawn
		cpuMax, memMax = max(cpuMax, p.cpu), max(memMax, float64(p.mem))
	}
	for i, p := range h {
		cpus[i], mems[i] = p.cpu, float64(p.mem)
	}
	var cpuNow float64
	var memNow int64
	if len(h) > 0 {
		cpuNow, memNow = h[len(h)-1].cpu, h[len(h)-1].mem
	}
	// CPU is drawn against at least 1% so an idle app stays flat rather
	// than magnifying noise to full height.
	var cpu, mem styled
	cpu.add(" CPU  ", sgrBold).add(sparkline(cpus, max(cpuMax, 1), cells), sgrGreen).
		add(fmt.Sprintf("  %6.1f%%  max %6.1f%%", cpuNow, cpuMax), "")
	mem.add(" MEM  ", sgrBold).add(sparkline(mems, memMax, cells), sgrCyan).
		add(fmt.Sprintf("  %7s  max %7s", humanBytes(memNow), humanBytes(int64(memMax))), "")
	return []styled{rule(title, m.width), cpu, mem, m.why(r)}
}

// roundSpan rounds d for a title: to 0.1 s under 10 s, else to the second.
func roundSpan(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// why is the selected row's reason, status text or last exit in full,
// which the list's INFO column may have cut.
func (m *monitModel) why(r monitRow) styled {
	var l styled
	for _, in := range r.insts {
		if info := instanceInfo(in, m.now); info != "" {
			label := " why   "
			if in.Status == "online" || in.Status == "starting" {
				label = " note  "
			}
			l.add(label, sgrBold)
			if len(r.insts) > 1 {
				l.add(instanceLabel(in.App, in.Instance)+": ", sgrDim)
			}
			l.add(oneLine(info), statusStyle(in.Status))
			return l
		}
	}
	return l
}

// helpLine is the last line: a pending confirmation, or the keys and the
// latest status.
func (m *monitModel) helpLine() styled {
	var l styled
	if m.keysOff {
		l.add(" stdin is not a terminal: no keys; Ctrl-C quits", sgrDim)
		return l
	}
	if m.editing {
		l.add(" filter logs: ", sgrBold).add(screenSafe(m.filter)+"▏", "").add("   enter keeps it, esc clears it", sgrDim)
		return l
	}
	if p := m.confirm; p != nil {
		l.fill = sgrReverse
		l.add(" "+p.question+" y = yes, any other key = no ", sgrBold+";"+sgrYellow)
		return l
	}
	// A fresh status comes first, so that a narrow screen cuts the keys,
	// not the news.
	if m.status != "" && (m.inFlight > 0 || m.now.Sub(m.statusAt) < statusLife) {
		sgr := sgrGreen
		if !m.statusOK {
			sgr = sgrRed
		}
		l.add(" "+oneLine(m.status), sgrBold+";"+sgr).add("  │", sgrDim)
	}
	// Short enough for 80 columns; j/k and l are in --help and the README.
	l.add(" ↑↓", sgrBold).add(" select  ", "").
		add("r", sgrBold).add(" restart  ", "").
		add("R", sgrBold).add(" reload  ", "").
		add("s", sgrBold).add(" stop  ", "").
		add("S", sgrBold).add(" start  ", "").
		add("+/-", sgrBold).add(" scale  ", "").
		add("/", sgrBold).add(" filter  ", "").
		add("q", sgrBold).add(" quit", "")
	return l
}

// instanceLabel is "app:N" for a log line's source.
func instanceLabel(app string, instance int) string { return app + ":" + strconv.Itoa(instance) }
