package cli

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keel-run/keel/internal/poll"

	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/control/controltest"
)

func writeLog(t *testing.T, home, name, content string) {
	t.Helper()
	dir := filepath.Join(home, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestMonitOnceWithoutTerminal(t *testing.T) {
	e := served(t, &controltest.Backend{Instances: sampleInstances()})
	writeLog(t, e.home, "web-0-out.log", "2026-11-25T10:00:00.000000000Z | listening on :3000\n")
	out := e.ok("monit")
	for _, want := range []string{"keel monit  4 instances, 1 online", "NAME", "web", "4242", "[", "45.2M",
		"crash loop: 16 unstable runs in a row", "logs", "web:0 | listening on :3000"} {
		if !strings.Contains(out, want) {
			t.Errorf("monit output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("monit wrote escapes to a non-terminal: %q", out)
	}
	if code, _, errs := e.run("monit", "--interval", "1ms"); code != 2 || !strings.Contains(errs, "want at least 100ms") {
		t.Errorf("monit --interval 1ms: %d %q", code, errs)
	}
}

func TestRenderMonit(t *testing.T) {
	var logLines []string
	for i := range 30 {
		logLines = append(logLines, "web:0 | line "+strconv.Itoa(i)+" \x1b[2J\x1b[31mred\x07 \xff end")
	}
	s := renderMonit(sampleInstances(), logLines, 40, 15, at, true)
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != 15 {
		t.Errorf("%d lines, want the 15 of the screen:\n%s", len(lines), s)
	}
	for _, l := range lines {
		plain := strings.NewReplacer(escBold, "", escReset, "").Replace(l)
		if n := utf8.RuneCountInString(plain); n > 40 {
			t.Errorf("line %q is %d wide, want ≤ 40", plain, n)
		}
		if strings.Contains(plain, "\x1b") || strings.Contains(plain, "\x07") {
			t.Errorf("line %q carries control characters", plain)
		}
	}
	if last := lines[len(lines)-1]; last != "web:0 | line 29 ·[2J·[31mred· \uFFFD end" {
		t.Errorf("last line %q: want the newest log line, made safe", last)
	}
	if got := cpuBar(250, 4); got != "[||||]" {
		t.Errorf("cpuBar(250) = %q", got)
	}
	if got := cpuBar(50, 4); got != "[||  ]" {
		t.Errorf("cpuBar(50) = %q", got)
	}
	if got := screenSafe("a\tb\xffc"); got != "a    b\uFFFDc" {
		t.Errorf("screenSafe: %q", got)
	}
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	// Non-blocking, so that the runtime poller owns it and Close ends a
	// Read in progress.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	m := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	return m, s
}

// ptyTerm is a pseudo-terminal for monit: the program gets the slave
// side, the test reads what it draws from the master side.
type ptyTerm struct {
	master, slave *os.File
	before        *unix.Termios
	screen        syncBuffer
}

func newPTYTerm(t *testing.T) *ptyTerm {
	t.Helper()
	p := &ptyTerm{}
	p.master, p.slave = openPTY(t)
	var err error
	if p.before, err = unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := p.master.Read(buf)
			p.screen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { p.master.Close(); <-readDone; p.slave.Close() })
	return p
}

// restored checks that the terminal is back as it was: its modes, and
// the main screen, the cursor and autowrap turned back on.
func (p *ptyTerm) restored(t *testing.T) {
	t.Helper()
	poll.Until(t, 20*time.Second, "monit to leave the alternate screen", func() bool { return strings.Contains(p.screen.String(), escLeave) })
	after, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Iflag != p.before.Iflag || after.Oflag != p.before.Oflag || after.Lflag != p.before.Lflag || after.Cflag != p.before.Cflag {
		t.Errorf("terminal modes not restored: %+v, was %+v", after, p.before)
	}
}

// TestMonitOnTerminal runs monit on a real pseudo-terminal: it draws on
// the alternate screen, quits on q, and leaves the terminal as it was.
func TestMonitOnTerminal(t *testing.T) {
	e := served(t, &controltest.Backend{Instances: []api.Instance{{App: "web", Pid: 1, Status: "online"}}})
	p := newPTYTerm(t)
	done := make(chan int, 1)
	go func() {
		done <- Run(context.Background(), []string{"monit", "--interval", "100ms"}, Stdio{In: p.slave, Out: p.slave, Err: p.slave}, e.deps)
	}()
	poll.Until(t, 20*time.Second, "monit to draw", func() bool { return strings.Contains(p.screen.String(), "keel monit") })
	// A resize redraws at the new size: the last frame is 15 lines, the
	// help line last.
	unix.IoctlSetWinsize(int(p.slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 15, Col: 60})
	unix.Kill(os.Getpid(), unix.SIGWINCH)
	var frame string
	if !poll.Within(20*time.Second, func() bool {
		s := p.screen.String()
		frame = s[max(strings.LastIndex(s, "\x1b[1;1H"), 0):]
		return strings.Contains(frame, "\x1b[15;1H\x1b[1m ↑↓") && !strings.Contains(frame, "\x1b[16;1H")
	}) {
		t.Errorf("no 15-line frame after the resize; the last frame: %q", frame)
	}
	if _, err := p.master.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("monit exit %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("monit did not quit on q")
	}
	p.restored(t)
	out := p.screen.String()
	if !strings.Contains(out, escEnter) || !strings.Contains(out, "web") {
		t.Errorf("screen %q", out)
	}
}

// Ending monit's context (SIGTERM, SIGINT from outside) restores the
// terminal too.
func TestMonitRestoresTheTerminalOnCancel(t *testing.T) {
	p := newPTYTerm(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runMonitTUI(ctx, p.slave, p.slave, &controltest.Backend{Instances: sampleInstances()}, t.TempDir(), 100*time.Millisecond, true)
	}()
	poll.Until(t, 20*time.Second, "monit to draw", func() bool { return strings.Contains(p.screen.String(), "web:0") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("monit after cancel: %v", err)
	}
	p.restored(t)
}

// With stdin not a terminal, monit draws without keys and says so; the
// context (Ctrl-C) ends it.
func TestMonitWithoutKeys(t *testing.T) {
	p := newPTYTerm(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runMonitTUI(ctx, nil, p.slave, &controltest.Backend{Instances: sampleInstances()}, t.TempDir(), 100*time.Millisecond, true)
	}()
	poll.Until(t, 20*time.Second, "monit to draw", func() bool { return strings.Contains(p.screen.String(), "no keys; Ctrl-C quits") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("monit after cancel: %v", err)
	}
	p.restored(t)
}

// panicSource is a daemon client with a bug.
type panicSource struct{ controltest.Backend }

func (*panicSource) List(context.Context) ([]api.Instance, error) { panic("a bug in List") }

// A panic in one of monit's goroutines restores the terminal, then goes
// on as a panic.
func TestMonitRestoresTheTerminalOnPanic(t *testing.T) {
	p := newPTYTerm(t)
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		runMonitTUI(context.Background(), p.slave, p.slave, &panicSource{}, t.TempDir(), 100*time.Millisecond, true)
	}()
	v := <-done
	if s, _ := v.(string); !strings.Contains(s, "a bug in List") || !strings.Contains(s, "goroutine of keel monit") {
		t.Errorf("recovered %v, want the List panic", v)
	}
	p.restored(t)
}

// A terminal that hangs up ends monit with an error, the terminal
// restored as far as it can be.
func TestMonitEndsWhenTheKeyboardHangsUp(t *testing.T) {
	out := newPTYTerm(t)
	in := newPTYTerm(t)
	done := make(chan error, 1)
	go func() {
		done <- runMonitTUI(context.Background(), in.slave, out.slave, &controltest.Backend{Instances: sampleInstances()}, t.TempDir(), 100*time.Millisecond, true)
	}()
	poll.Until(t, 20*time.Second, "monit to draw", func() bool { return strings.Contains(out.screen.String(), "web:0") })
	in.master.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "reading keys") {
			t.Errorf("monit after hang-up: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("monit did not end when its keyboard hung up")
	}
	out.restored(t)
}
