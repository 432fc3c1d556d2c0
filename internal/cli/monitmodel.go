package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/spec"
)

// The interactive monit is an Elm-style loop: a model that only the
// terminal loop's goroutine touches, an update function that turns one
// message (a key, a resize, a daemon answer, log lines) into a new state
// plus the effects to run (a list request, an action), and a view that
// draws the state. The update and the view do no I/O, so tests drive them
// with key messages and fake data.

// monitSource is what the interactive monit asks of the daemon;
// *client.Client has it.
type monitSource interface {
	List(ctx context.Context) ([]api.Instance, error)
	Restart(ctx context.Context, t spec.Target) (api.Result, error)
	Reload(ctx context.Context, t spec.Target) (api.Result, error)
	Stop(ctx context.Context, t spec.Target) (api.Result, error)
	Scale(ctx context.Context, app string, n int) (api.Result, error)
}

// Messages the model takes.
type (
	keyMsg  string // a decoded key: "up", "down", "pgup", "ctrl+c", "esc", "enter" or the rune typed
	sizeMsg struct{ width, height int }
	tickMsg time.Time // time to ask for a new list
	listMsg struct {
		at  time.Time
		l   []api.Instance
		err error
	}
	logMsg struct {
		gen   int // the selection the follower was started for
		lines []logLine
	}
	actionMsg struct {
		actionEffect
		res api.Result
		err error
	}
)

// Effects the model asks the loop to run; each one's answer comes back as
// a message.
type (
	fetchEffect  struct{} // List → listMsg
	actionEffect struct { // Restart, Reload, Stop, Scale → actionMsg
		verb string // "restart", "reload", "stop", "start", "scale"
		t    spec.Target
		n    int // for scale: the new instance count
	}
)

// logLine is one line of the log pane.
type logLine struct {
	inst   string // "web:0"
	stderr bool
	text   string // made screen-safe
}

const (
	histCap    = 900  // samples kept per row: 15 minutes at the default 1 s interval
	logCap     = 1000 // log lines kept for the selection
	statusLife = 8 * time.Second
)

// monitRow is one line of the app list: an app, or one instance of an app
// that has several.
type monitRow struct {
	key      string // "web" for an app, "web:1" for an instance
	app      string
	instance int  // -1 for an app row
	single   bool // an app row standing for its only instance
	insts    []api.Instance
}

// target is what an action on the row acts on.
func (r monitRow) target() spec.Target { return spec.Target{App: r.app, Instance: r.instance} }

// sample is one point of a row's history.
type sample struct {
	cpu float64 // percent of one CPU
	mem int64   // RSS bytes
}

// series is a bounded history, oldest first.
type series struct{ s []sample }

func (h *series) add(p sample) {
	if len(h.s) == histCap {
		copy(h.s, h.s[1:])
		h.s = h.s[:histCap-1]
	}
	h.s = append(h.s, p)
}

// pending is an action waiting for y/n.
type pending struct {
	actionEffect
	row      monitRow
	question string
}

// monitModel is the whole state of the interactive monit.
type monitModel struct {
	interval time.Duration // between list requests: one history sample each
	color    bool
	keysOff  bool // stdin is not a terminal: the view runs without keys

	width, height int
	now           time.Time

	insts    []api.Instance
	listErr  error
	fetching bool
	loaded   bool // a first list arrived

	rows   []monitRow
	sel    int    // index into rows
	selKey string // rows[sel].key, to keep the selection across refreshes
	top    int    // first row shown

	hist map[string]*series

	logs   []logLine // of the selection's follower, oldest first
	logGen int       // counts selection changes: tells the current follower's lines from a stopped one's

	filter  string // the log pane shows only lines that contain it (any case)
	editing bool   // keys go to filter

	confirm  *pending
	inFlight int
	status   string
	statusOK bool
	statusAt time.Time

	quit bool
}

func newMonitModel(interval time.Duration, color bool, now time.Time) *monitModel {
	return &monitModel{interval: interval, color: color, now: now, width: 80, height: 24, hist: map[string]*series{}}
}

// update applies one message and returns the effects to run.
func (m *monitModel) update(msg any) []any {
	switch msg := msg.(type) {
	case keyMsg:
		return m.key(string(msg))
	case sizeMsg:
		m.width, m.height = msg.width, msg.height
		m.scroll()
	case tickMsg:
		m.now = time.Time(msg)
		if !m.fetching {
			m.fetching = true
			return []any{fetchEffect{}}
		}
	case listMsg:
		m.fetching = false
		m.now = msg.at
		if msg.err != nil {
			m.listErr = msg.err
			return nil
		}
		m.listErr = nil
		m.loaded = true
		m.setList(msg.l)
	case logMsg:
		if msg.gen != m.logGen {
			return nil // a follower of an earlier selection
		}
		m.logs = append(m.logs, msg.lines...)
		if n := len(m.logs); n > logCap {
			m.logs = append(m.logs[:0:0], m.logs[n-logCap:]...)
		}
	case actionMsg:
		m.inFlight--
		if msg.err != nil {
			m.setStatus(fmt.Sprintf("%s failed: %v", msg.phrase(), msg.err), false)
		} else {
			m.setStatus(actionDone(msg.actionEffect, msg.res), true)
		}
		if !m.fetching {
			m.fetching = true
			return []any{fetchEffect{}}
		}
	}
	return nil
}

func (m *monitModel) setStatus(s string, ok bool) {
	m.status, m.statusOK, m.statusAt = s, ok, m.now
}

// phrase is the action in words: "restart web", "scale web to 3".
func (a actionEffect) phrase() string {
	if a.verb == "scale" {
		return fmt.Sprintf("scale %s to %d", a.t.App, a.n)
	}
	return a.verb + " " + a.t.String()
}

// actionDone says what an action did, in the words keel's CLI uses.
func actionDone(a actionEffect, res api.Result) string {
	if a.verb == "scale" {
		return fmt.Sprintf("scaled %s to %d", a.t.App, a.n)
	}
	done := map[string]string{"restart": "restarted", "reload": "reloaded", "stop": "stopped", "start": "started"}[a.verb]
	s := done + " " + a.t.String()
	if n := len(res.Instances); n > 0 {
		s += fmt.Sprintf(" (%d instance%s)", n, plural(n))
	}
	if res.Message != "" {
		s += ": " + res.Message
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (m *monitModel) key(k string) []any {
	if k == "ctrl+c" {
		m.quit = true
		return nil
	}
	if m.editing {
		switch {
		case k == "enter":
			m.editing = false
		case k == "esc":
			m.editing, m.filter = false, ""
		case k == "backspace":
			if _, size := utf8.DecodeLastRuneInString(m.filter); size > 0 {
				m.filter = m.filter[:len(m.filter)-size]
			}
		case utf8.RuneCountInString(k) == 1:
			m.filter += k
		}
		return nil
	}
	if p := m.confirm; p != nil {
		m.confirm = nil
		if k != "y" && k != "Y" {
			m.setStatus(p.phrase()+": cancelled", true)
			return nil
		}
		m.inFlight++
		m.setStatus(p.phrase()+"…", true)
		return []any{p.actionEffect}
	}
	switch k {
	case "q", "Q":
		m.quit = true
	case "up", "k":
		m.move(-1)
	case "down", "j":
		m.move(1)
	case "pgup":
		m.move(-max(m.listHeight()-1, 1))
	case "pgdown":
		m.move(max(m.listHeight()-1, 1))
	case "home", "g":
		m.move(-len(m.rows))
	case "end", "G":
		m.move(len(m.rows))
	case "r":
		m.ask("restart")
	case "R", "l":
		m.ask("reload")
	case "s":
		m.ask("stop")
	case "S":
		m.ask("start")
	case "+", "=":
		m.askScale(1)
	case "-", "_":
		m.askScale(-1)
	case "/":
		m.editing = true
	case "esc":
		m.status, m.filter = "", ""
	}
	return nil
}

// ask puts the action on the selected row up for confirmation.
func (m *monitModel) ask(verb string) {
	r, ok := m.selected()
	if !ok {
		m.setStatus("no app to "+verb, false)
		return
	}
	if verb == "start" && running(r.insts) {
		m.setStatus(r.key+" is running: r restarts it", false)
		return
	}
	what := r.key
	if r.instance < 0 && len(r.insts) > 1 {
		what += fmt.Sprintf(" (all %d instances)", len(r.insts))
	}
	q := strings.ToUpper(verb[:1]) + verb[1:] + " " + what + "?"
	m.confirm = &pending{actionEffect: actionEffect{verb: verb, t: r.target()}, row: r, question: q}
}

// askScale puts scaling the selected row's app by d instances up for
// confirmation. A row stands for at least one instance, so the count
// never goes below 0.
func (m *monitModel) askScale(d int) {
	r, ok := m.selected()
	if !ok {
		m.setStatus("no app to scale", false)
		return
	}
	n := 0
	for _, in := range m.insts {
		if in.App == r.app {
			n++
		}
	}
	q := fmt.Sprintf("Scale %s from %d to %d instance%s?", r.app, n, n+d, plural(n+d))
	m.confirm = &pending{actionEffect: actionEffect{verb: "scale", t: spec.Target{App: r.app, Instance: -1}, n: n + d}, row: r, question: q}
}

// running reports whether every instance is starting or online.
func running(l []api.Instance) bool {
	for _, in := range l {
		if in.Status != "online" && in.Status != "starting" {
			return false
		}
	}
	return len(l) > 0
}

// shownLogs are the log lines that pass the filter, oldest first.
func (m *monitModel) shownLogs() []logLine {
	if m.filter == "" {
		return m.logs
	}
	f := strings.ToLower(m.filter)
	var out []logLine
	for _, l := range m.logs {
		if strings.Contains(strings.ToLower(l.text), f) || strings.Contains(l.inst, f) {
			out = append(out, l)
		}
	}
	return out
}

func (m *monitModel) selected() (monitRow, bool) {
	if m.sel < 0 || m.sel >= len(m.rows) {
		return monitRow{}, false
	}
	return m.rows[m.sel], true
}

// logTarget is what the log pane follows: the selected row's app or
// instance (ok false for none), and the generation its lines must carry.
func (m *monitModel) logTarget() (t spec.Target, gen int, ok bool) {
	r, ok := m.selected()
	return r.target(), m.logGen, ok
}

func (m *monitModel) move(d int) {
	if len(m.rows) == 0 {
		return
	}
	m.sel = min(max(m.sel+d, 0), len(m.rows)-1)
	m.selectRow(m.sel)
}

func (m *monitModel) selectRow(i int) {
	key := m.rows[i].key
	if key != m.selKey {
		m.logs = nil
		m.logGen++
	}
	m.sel, m.selKey = i, key
	m.scroll()
}

// scroll keeps the selected row on screen.
func (m *monitModel) scroll() {
	h := m.listHeight()
	if m.sel < m.top {
		m.top = m.sel
	}
	if m.sel >= m.top+h {
		m.top = m.sel - h + 1
	}
	m.top = max(min(m.top, len(m.rows)-h), 0)
}

// setList takes a new snapshot: rebuilds the rows, keeps the selection on
// the same app or instance, and adds a history sample to every row.
func (m *monitModel) setList(l []api.Instance) {
	m.insts = l
	m.rows = buildRows(l)
	seen := map[string]bool{}
	for _, r := range m.rows {
		seen[r.key] = true
		var p sample
		for _, in := range r.insts {
			if in.Pid > 0 {
				p.cpu += in.CPUPercent
				p.mem += in.MemoryBytes
			}
		}
		h := m.hist[r.key]
		if h == nil {
			h = &series{}
			m.hist[r.key] = h
		}
		h.add(p)
	}
	for k := range m.hist {
		if !seen[k] {
			delete(m.hist, k)
		}
	}
	if len(m.rows) == 0 {
		if m.selKey != "" {
			m.logGen++
		}
		m.sel, m.selKey, m.logs = 0, "", nil
		return
	}
	i := m.sel
	for j, r := range m.rows {
		if r.key == m.selKey {
			i = j
			break
		}
	}
	m.selectRow(min(i, len(m.rows)-1))
}

// buildRows groups instances under their app, in the daemon's order. An
// app with one instance is one row; an app with several has a row of its
// own followed by one row per instance.
func buildRows(l []api.Instance) []monitRow {
	var apps []string
	by := map[string][]api.Instance{}
	for _, in := range l {
		if _, ok := by[in.App]; !ok {
			apps = append(apps, in.App)
		}
		by[in.App] = append(by[in.App], in)
	}
	var rows []monitRow
	for _, a := range apps {
		insts := by[a]
		if len(insts) == 1 {
			rows = append(rows, monitRow{key: a, app: a, instance: -1, single: true, insts: insts})
			continue
		}
		rows = append(rows, monitRow{key: a, app: a, instance: -1, insts: insts})
		for _, in := range insts {
			rows = append(rows, monitRow{key: a + ":" + strconv.Itoa(in.Instance), app: a, instance: in.Instance, insts: []api.Instance{in}})
		}
	}
	return rows
}

// Layout: the screen's fixed lines and how the rest is shared between the
// app list and the log pane.
const (
	fixedLines = 8 // title, column heads, chart rule, CPU, MEM, why, log rule, help
	minLogRows = 3
)

// listHeight is how many rows of the app list fit: all of them when the
// log pane keeps at least half of what is left, else half.
func (m *monitModel) listHeight() int {
	room := m.height - fixedLines
	if room <= 1 {
		return 1
	}
	h := len(m.rows)
	if h > room-minLogRows {
		h = room / 2
	}
	return max(min(h, room), 1)
}
