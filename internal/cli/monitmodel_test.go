package cli

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/control/controltest"
	"github.com/keel-run/keel/internal/spec"
)

// harness runs the model the way runMonitTUI does, with the effects run at
// once against a fake daemon (controltest.Backend has monitSource's
// methods).
type harness struct {
	t   *testing.T
	m   *monitModel
	src *controltest.Backend
	now time.Time
}

func newHarness(t *testing.T, l []api.Instance) *harness {
	h := &harness{t: t, m: newMonitModel(time.Second, false, at), src: &controltest.Backend{Instances: l, Errs: map[string]error{}}, now: at}
	h.send(sizeMsg{100, 30})
	h.tick()
	return h
}

func (h *harness) send(msg any) {
	h.t.Helper()
	effects := h.m.update(msg)
	for _, e := range effects {
		switch e := e.(type) {
		case fetchEffect:
			l, err := h.src.List(context.Background())
			h.send(listMsg{at: h.now, l: l, err: err})
		case actionEffect:
			res, err := act(context.Background(), h.src, e)
			h.send(actionMsg{actionEffect: e, res: res, err: err})
		default:
			h.t.Fatalf("unknown effect %T", e)
		}
	}
}

// actions are the calls made to the daemon other than List.
func (h *harness) actions() []string {
	var calls []string
	for _, c := range h.src.Calls() {
		if c != "List" {
			calls = append(calls, c)
		}
	}
	return calls
}

func (h *harness) keys(ks ...string) {
	h.t.Helper()
	for _, k := range ks {
		h.send(keyMsg(k))
	}
}

func (h *harness) tick() {
	h.now = h.now.Add(time.Second)
	h.send(tickMsg(h.now))
}

// screen is the view without escapes, one string.
func (h *harness) screen() string {
	return strings.Join(h.m.view(false), "\n")
}

// selectedLine is the line of the list marked as selected.
func (h *harness) selectedLine() string {
	for _, l := range h.m.view(false) {
		if strings.HasPrefix(l, "›") {
			return l
		}
	}
	return ""
}

func TestMonitSelectionMoves(t *testing.T) {
	h := newHarness(t, sampleInstances())
	// Rows: web (2 instances), web:0, web:1, api, job.
	want := []string{"web", "web:0", "web:1", "api", "job"}
	for i, w := range want {
		if h.m.selKey != w {
			t.Fatalf("after %d downs: selected %q, want %q", i, h.m.selKey, w)
		}
		if !strings.Contains(h.selectedLine(), w) {
			t.Errorf("selected line %q does not show %s", h.selectedLine(), w)
		}
		if tg, gen, ok := h.m.logTarget(); !ok || tg.String() != w || gen != i+1 {
			t.Errorf("log pane follows %v (generation %d), want %s (%d)", tg, gen, w, i+1)
		}
		h.keys("down")
	}
	h.keys("down") // stays on the last
	if h.m.selKey != "job" {
		t.Errorf("down past the end: %q", h.m.selKey)
	}
	h.keys("k", "up")
	if h.m.selKey != "web:1" {
		t.Errorf("k, up from job: %q, want web:1", h.m.selKey)
	}
	h.keys("j")
	if h.m.selKey != "api" {
		t.Errorf("j: %q", h.m.selKey)
	}
	h.keys("home")
	if h.m.selKey != "web" {
		t.Errorf("home: %q", h.m.selKey)
	}
	h.keys("G")
	if h.m.selKey != "job" {
		t.Errorf("G: %q", h.m.selKey)
	}
	h.keys("g")
	if tg, _, _ := h.m.logTarget(); tg != (spec.Target{App: "web", Instance: -1}) {
		t.Errorf("app row target %+v", tg)
	}
	h.keys("j")
	if tg, _, _ := h.m.logTarget(); tg != (spec.Target{App: "web", Instance: 0}) {
		t.Errorf("instance row target %+v", tg)
	}
}

func TestMonitSelectionFollowsTheAppAcrossRefreshes(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.keys("j", "j", "j") // api
	// api moves to the top; the selection stays on it.
	l := sampleInstances()
	h.src.Instances = append([]api.Instance{l[2]}, l[0], l[1], l[3])
	h.tick()
	if h.m.selKey != "api" || h.m.sel != 0 {
		t.Errorf("after reorder: %q at %d, want api at 0", h.m.selKey, h.m.sel)
	}
	// api is deleted: the selection stays at its place, on another app.
	h.src.Instances = []api.Instance{l[0], l[1], l[3]}
	h.tick()
	if h.m.selKey != "web" {
		t.Errorf("after delete: %q", h.m.selKey)
	}
	h.src.Instances = nil
	h.tick()
	if _, ok := h.m.selected(); ok {
		t.Error("a selection with no apps")
	}
	if s := h.screen(); !strings.Contains(s, "no apps yet") {
		t.Errorf("empty list screen:\n%s", s)
	}
	h.keys("r")
	if h.m.confirm != nil || !strings.Contains(h.m.status, "no app to restart") {
		t.Errorf("r with no apps: confirm %v, status %q", h.m.confirm, h.m.status)
	}
}

func TestMonitLogPane(t *testing.T) {
	h := newHarness(t, sampleInstances())
	gen := h.m.logGen
	h.send(logMsg{gen: gen, lines: []logLine{{inst: "web:0", text: "listening on :3000"}, {inst: "web:1", stderr: true, text: "warning: slow"}}})
	h.send(logMsg{gen: gen - 1, lines: []logLine{{inst: "api:0", text: "not the selection"}}})
	s := h.screen()
	for _, want := range []string{"logs: web", "web:0 | listening on :3000", "web:1 | warning: slow"} {
		if !strings.Contains(s, want) {
			t.Errorf("screen lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "not the selection") {
		t.Errorf("a line for api shows while web is selected:\n%s", s)
	}
	// The newest lines fill the pane; older ones scroll off.
	var many []logLine
	for i := range 2 * logCap {
		many = append(many, logLine{inst: "web:0", text: fmt.Sprintf("line %d", i)})
	}
	h.send(logMsg{gen: gen, lines: many})
	if len(h.m.logs) != logCap {
		t.Errorf("%d lines kept, want %d", len(h.m.logs), logCap)
	}
	lines := h.m.view(false)
	if got := lines[len(lines)-2]; !strings.HasSuffix(got, fmt.Sprintf("line %d", 2*logCap-1)) {
		t.Errorf("line above the help line is %q, want the newest", got)
	}
	// Away and back: the pane starts again, and lines of the follower
	// started for the first visit are ignored.
	h.keys("j", "k")
	h.send(logMsg{gen: gen, lines: []logLine{{inst: "web:0", text: "late line of the old follower"}}})
	if len(h.m.logs) != 0 || h.m.logGen == gen {
		t.Errorf("after moving away and back: %d lines, generation %d (was %d)", len(h.m.logs), h.m.logGen, gen)
	}
	// Another selection starts with an empty pane.
	h.keys("j")
	if len(h.m.logs) != 0 || !strings.Contains(h.screen(), "logs: web:0") || !strings.Contains(h.screen(), "no log lines yet") {
		t.Errorf("after moving: %d lines\n%s", len(h.m.logs), h.screen())
	}
}

func TestMonitActionsAskFirst(t *testing.T) {
	for _, c := range []struct {
		keys []string
		want string // the call made, "" for none
	}{
		{[]string{"r", "y"}, "Restart web"},
		{[]string{"r", "Y"}, "Restart web"},
		{[]string{"R", "y"}, "Reload web"},
		{[]string{"l", "y"}, "Reload web"},
		{[]string{"j", "s", "y"}, "Stop web:0"},
		{[]string{"j", "j", "j", "S", "y"}, "Restart api"}, // start of an errored app
		{[]string{"+", "y"}, "Scale web 3"},
		{[]string{"j", "=", "y"}, "Scale web 3"}, // on an instance row: its app
		{[]string{"-", "y"}, "Scale web 1"},
		{[]string{"end", "-", "y"}, "Scale job 0"},
		{[]string{"r", "n"}, ""},
		{[]string{"r", "esc"}, ""},
		{[]string{"R", "q"}, ""}, // q answers no, it does not quit
		{[]string{"S"}, ""},      // web is running: nothing to ask
	} {
		t.Run(strings.Join(c.keys, ","), func(t *testing.T) {
			h := newHarness(t, sampleInstances())
			h.keys(c.keys[:len(c.keys)-1]...)
			last := c.keys[len(c.keys)-1]
			if p := h.m.confirm; c.want != "" || last == "n" || last == "esc" || last == "q" {
				if p == nil {
					t.Fatalf("no confirmation asked after %v", c.keys[:len(c.keys)-1])
				}
				help := h.m.view(false)[h.m.height-1]
				if !strings.Contains(help, "? y = yes") || !strings.Contains(help, p.t.App) {
					t.Errorf("help line %q does not ask about %s", help, p.t.App)
				}
			}
			h.keys(last)
			if h.m.confirm != nil {
				t.Error("still asking")
			}
			if h.m.quit {
				t.Error("quit while answering")
			}
			got := strings.Join(h.actions(), "; ")
			if got != c.want {
				t.Errorf("calls %q, want %q", got, c.want)
			}
			switch {
			case c.want != "":
				verb := strings.ToLower(strings.Fields(c.want)[0])
				if c.keys[len(c.keys)-2] == "S" {
					verb = "start"
				}
				done := map[string]string{"restart": "restarted", "reload": "reloaded", "stop": "stopped", "start": "started", "scale": "scaled"}[verb]
				if !strings.Contains(h.m.status, done) || !h.m.statusOK {
					t.Errorf("status %q (ok %v), want %q", h.m.status, h.m.statusOK, done)
				}
				if h.m.inFlight != 0 {
					t.Errorf("%d actions in flight", h.m.inFlight)
				}
			case last == "S":
				if !strings.Contains(h.m.status, "web is running") {
					t.Errorf("status %q", h.m.status)
				}
			default:
				if !strings.Contains(h.m.status, "cancelled") {
					t.Errorf("status %q, want cancelled", h.m.status)
				}
			}
			if !strings.Contains(h.screen(), h.m.status) {
				t.Errorf("the status %q is not on screen:\n%s", h.m.status, h.screen())
			}
		})
	}
}

func TestMonitActionErrorShows(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.src.Errs["Restart"] = errors.New("app web: no such app")
	h.keys("r", "y")
	if h.m.statusOK || !strings.Contains(h.m.status, "restart web failed: app web: no such app") {
		t.Errorf("status %q (ok %v)", h.m.status, h.m.statusOK)
	}
	// The status goes away after a while.
	for range 10 {
		h.tick()
	}
	if strings.Contains(h.screen(), "failed") {
		t.Errorf("old status still shown:\n%s", h.screen())
	}
}

func TestMonitQuits(t *testing.T) {
	for _, keys := range [][]string{{"q"}, {"Q"}, {"ctrl+c"}, {"r", "ctrl+c"}} {
		h := newHarness(t, sampleInstances())
		h.keys(keys...)
		if !h.m.quit {
			t.Errorf("%v did not quit", keys)
		}
		if len(h.actions()) != 0 {
			t.Errorf("%v: calls %v", keys, h.actions())
		}
	}
}

func TestMonitDaemonErrorKeepsTheView(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.src.Errs["List"] = errors.New("no keel daemon is running")
	h.tick()
	s := h.screen()
	if !strings.Contains(s, "daemon: no keel daemon is running") || !strings.Contains(s, "web:0") {
		t.Errorf("screen:\n%s", s)
	}
	delete(h.src.Errs, "List")
	h.tick()
	if strings.Contains(h.screen(), "daemon:") {
		t.Errorf("error still shown:\n%s", h.screen())
	}
}

// A list request in flight is not asked again on the next tick.
func TestMonitOneFetchAtATime(t *testing.T) {
	m := newMonitModel(time.Second, false, at)
	if e := m.update(tickMsg(at)); len(e) != 1 {
		t.Fatalf("first tick: %v", e)
	}
	if e := m.update(tickMsg(at.Add(time.Second))); len(e) != 0 {
		t.Errorf("second tick while fetching: %v", e)
	}
	m.update(listMsg{at: at, l: sampleInstances()})
	if e := m.update(tickMsg(at.Add(2 * time.Second))); len(e) != 1 {
		t.Errorf("tick after the answer: %v", e)
	}
}

func TestMonitSparklines(t *testing.T) {
	l := []api.Instance{{App: "web", Instance: 0, Pid: 10, Status: "online"}}
	h := newHarness(t, l)
	for i := range 20 {
		l[0].CPUPercent = float64(i * 5)
		l[0].MemoryBytes = int64(i+1) << 20
		h.tick()
	}
	s := h.screen()
	for _, want := range []string{"web · CPU and memory, last 21s", "95.0%  max   95.0%", "20.0M  max   20.0M"} {
		if !strings.Contains(s, want) {
			t.Errorf("screen lacks %q:\n%s", want, s)
		}
	}
	cpu := regexp.MustCompile(`CPU +([▁▂▃▄▅▆▇█]+)`).FindStringSubmatch(s)
	if cpu == nil || !strings.HasSuffix(cpu[1], "█") || !strings.HasPrefix(cpu[1], "▁") {
		t.Errorf("CPU sparkline %q: want rising to full", cpu)
	}
	if got := len(h.m.hist["web"].s); got != 21 {
		t.Errorf("%d samples, want 21", got)
	}
	for range histCap {
		h.tick()
	}
	if got := len(h.m.hist["web"].s); got != histCap {
		t.Errorf("%d samples, want the cap %d", got, histCap)
	}
	h.src.Instances = []api.Instance{{App: "api", Instance: 0, Pid: 11, Status: "online"}}
	h.tick()
	if _, ok := h.m.hist["web"]; ok {
		t.Error("history of a deleted app kept")
	}
}

func TestSparkline(t *testing.T) {
	for _, c := range []struct {
		vals  []float64
		top   float64
		width int
		want  string
	}{
		{[]float64{0, 50, 100}, 100, 3, "▁▄█"},
		{[]float64{0, 50, 100}, 100, 5, "  ▁▄█"},
		{[]float64{1, 2, 3, 4}, 4, 2, "▆█"},
		{[]float64{0.001, 0, 200}, 100, 3, "▂▁█"},
		{[]float64{0, 0}, 0, 2, "▁▁"},
		{[]float64{1}, 1, 0, ""},
	} {
		if got := sparkline(c.vals, c.top, c.width); got != c.want {
			t.Errorf("sparkline(%v, %v, %d) = %q, want %q", c.vals, c.top, c.width, got, c.want)
		}
	}
}

// Every size of terminal gets exactly its height in lines, none wider
// than its width, and the help line at the bottom.
func TestMonitViewFitsTheScreen(t *testing.T) {
	var l []api.Instance
	for i := range 40 {
		l = append(l, api.Instance{App: fmt.Sprintf("app-with-a-long-name-%d", i/4), Instance: i % 4, Pid: 100 + i, Status: "online",
			CPUPercent: float64(i), MemoryBytes: int64(i) << 20, UptimeMs: 5000, StatusText: "serving 漢字 requests"})
	}
	h := newHarness(t, l)
	h.send(logMsg{gen: h.m.logGen, lines: []logLine{{inst: "x:0", text: strings.Repeat("漢", 300)}}})
	for _, size := range [][2]int{{100, 30}, {80, 24}, {40, 10}, {20, 5}, {200, 60}, {10, 2}, {1, 1}} {
		h.send(sizeMsg{size[0], size[1]})
		h.keys("end")
		for _, ansi := range []bool{false, true} {
			lines := h.m.view(ansi)
			if len(lines) != size[1] {
				t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
			}
			for _, line := range lines {
				if w := textWidth(stripSGR(line)); w > size[0] {
					t.Errorf("%dx%d: line %q is %d wide", size[0], size[1], stripSGR(line), w)
				}
			}
			if size[1] >= 10 && !strings.Contains(stripSGR(lines[len(lines)-1]), "select") {
				t.Errorf("%dx%d: last line %q is not the help line", size[0], size[1], lines[len(lines)-1])
			}
		}
		if size[1] >= 10 && !strings.Contains(h.selectedLine(), "app-with-a-long-name-9:3") {
			t.Errorf("%dx%d: the selection (the last row) is not on screen:\n%s", size[0], size[1], h.screen())
		}
	}
}

var sgrRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

func stripSGR(s string) string { return sgrRE.ReplaceAllString(s, "") }

func TestMonitColours(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.m.color = true
	s := strings.Join(h.m.view(true), "\n")
	for _, want := range []string{"\x1b[32monline", "\x1b[31merrored", "\x1b[7;1m› "} {
		if !strings.Contains(s, want) {
			t.Errorf("coloured view lacks %q", want)
		}
	}
	h.m.color = false // NO_COLOR: bold and reverse stay, colours go
	s = strings.Join(h.m.view(true), "\n")
	if strings.Contains(s, "\x1b[32m") || !strings.Contains(s, "\x1b[7;1m› ") {
		t.Errorf("NO_COLOR view %q", s)
	}
}

func TestDecodeKeys(t *testing.T) {
	for _, c := range []struct {
		in    string
		flush bool
		keys  string
		rest  string
	}{
		{"jk\x1b[A\x1b[B\x1bOA\x1bOB", false, "j k up down up down", ""},
		{"\x1b[5~\x1b[6~\x1b[H\x1b[F\x1b[1~\x1b[4~", false, "pgup pgdown home end home end", ""},
		{"\x03q\r", false, "ctrl+c q enter", ""},
		{"r\x1b[", false, "r", "\x1b["},
		{"r\x1b", false, "r", "\x1b"},
		{"\x1b", true, "esc", ""},
		{"\x1by", false, "esc y", ""},
		{"\x1b[1;5A\x1b[200~x", false, "x", ""}, // unknown sequences are skipped
		{"é\xc3", false, "é", "\xc3"},
		{"\x1b[1;", true, "", ""},
		{"\x00\x7f\x08", false, "backspace backspace", ""},
	} {
		keys, rest := decodeKeys([]byte(c.in), c.flush)
		if strings.Join(keys, " ") != c.keys || string(rest) != c.rest {
			t.Errorf("decodeKeys(%q, %v) = %q, %q; want %q, %q", c.in, c.flush, keys, rest, c.keys, c.rest)
		}
	}
}

func TestLogSink(t *testing.T) {
	var got []logMsg
	s := &logSink{ctx: context.Background(), gen: 7, send: func(m any) bool { got = append(got, m.(logMsg)); return true }}
	s.Write([]byte(`{"app":"web","instance":0,"stream":"out","line":"one"}` + "\n" + `{"app":"web","instance":1,"stream":"err","line":"tw`))
	s.Write([]byte(`o \u001b[2J"}` + "\nnot json\n"))
	want := []logMsg{
		{gen: 7, lines: []logLine{{inst: "web:0", text: "one"}}},
		{gen: 7, lines: []logLine{{inst: "web:1", stderr: true, text: "two ·[2J"}}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s = &logSink{ctx: ctx, gen: 7, send: func(any) bool { return false }}
	if _, err := s.Write([]byte(`{"app":"web","line":"x"}` + "\n")); !errors.Is(err, context.Canceled) {
		t.Errorf("write after the pane moved on: %v", err)
	}
}

// The selected row's reason shows in full under its charts.
func TestMonitWhyLine(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.send(sizeMsg{50, 30}) // too narrow for the INFO column
	h.keys("j", "j", "j")   // api, errored
	s := h.screen()
	if !strings.Contains(s, " why   crash loop: 16 unstable runs in a row") {
		t.Errorf("no why line for api:\n%s", s)
	}
	h.keys("j") // job, stopped
	if s := h.screen(); !strings.Contains(s, " why   last exit: signal SIGTERM") {
		t.Errorf("no why line for job:\n%s", s)
	}
	h.keys("home") // web: nothing to say
	if s := h.screen(); strings.Contains(s, " why ") {
		t.Errorf("a why line for web:\n%s", s)
	}
}

func TestMonitRows(t *testing.T) {
	l := append(sampleInstances(),
		api.Instance{App: "batch", Instance: 0, Status: "stopped"}, api.Instance{App: "batch", Instance: 1, Status: "stopped"})
	h := newHarness(t, l)
	h.send(sizeMsg{140, 30})
	var rows []string
	for _, line := range h.m.view(false)[2:10] {
		rows = append(rows, strings.Join(strings.Fields(strings.TrimPrefix(line, "›")), " "))
	}
	want := []string{
		"web 1/2 online 1.2% 45.2M 2", // the app: its instances summed
		"├ web:0 online 4242 1.2% 45.2M 2 3m",
		"└ web:1 starting 4243 0.0% 2.0K 0 0s",
		"api errored - - 15 crash loop: 16 unstable runs in a row",
		"job stopped - - 0 last exit: signal SIGTERM (stop) 1s ago", // the harness ticked once
		"batch stopped - - 0",
		"├ batch:0 stopped - - 0",
		"└ batch:1 stopped - - 0",
	}
	for i := range want {
		if i >= len(rows) || rows[i] != want[i] {
			t.Errorf("row %d: %q, want %q", i, rows[i], want[i])
		}
	}
}

func TestMonitLogFilter(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.send(logMsg{gen: h.m.logGen, lines: []logLine{
		{inst: "web:0", text: "GET / 200"}, {inst: "web:1", stderr: true, text: "Error: ECONNRESET"}, {inst: "web:0", text: "GET /x 404"}}})
	h.keys("/", "e", "r", "r", "x", "backspace")
	if help := h.m.view(false)[h.m.height-1]; !strings.Contains(help, "filter logs: err▏") {
		t.Errorf("help line while typing: %q", help)
	}
	h.keys("j", "q") // typed into the filter: no move, no quit
	if h.m.quit || h.m.selKey != "web" || h.m.filter != "errjq" {
		t.Fatalf("keys while typing acted: quit %v, selected %s, filter %q", h.m.quit, h.m.selKey, h.m.filter)
	}
	h.keys("backspace", "backspace", "enter")
	s := h.screen()
	if !strings.Contains(s, "logs: web · lines with “err”") || !strings.Contains(s, "Error: ECONNRESET") || strings.Contains(s, "GET /") {
		t.Errorf("filtered pane:\n%s", s)
	}
	h.keys("/", "z", "enter")
	if s := h.screen(); !strings.Contains(s, "no line matches the filter") {
		t.Errorf("filter matching nothing:\n%s", s)
	}
	h.keys("esc") // clears the filter
	if s := h.screen(); !strings.Contains(s, "GET /x 404") || strings.Contains(s, "lines with") {
		t.Errorf("after esc:\n%s", s)
	}
	h.keys("/", "x", "esc")
	if h.m.filter != "" || h.m.editing {
		t.Errorf("esc while typing: filter %q, editing %v", h.m.filter, h.m.editing)
	}
}

// The help line fits 80 columns, quit included.
func TestMonitHelpFits80Columns(t *testing.T) {
	h := newHarness(t, sampleInstances())
	h.send(sizeMsg{80, 24})
	if help := h.m.view(false)[23]; !strings.HasSuffix(help, "q quit") {
		t.Errorf("help line %q", help)
	}
}
