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

// TestMonitOnTerminal runs monit on a real pseudo-terminal: it draws on
// the alternate screen, quits on q, and leaves the terminal as it was.
func TestMonitOnTerminal(t *testing.T) {
	e := served(t, &controltest.Backend{Instances: []api.Instance{{App: "web", Pid: 1, Status: "online"}}})
	master, slave := openPTY(t)
	defer slave.Close()
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var screen syncBuffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			screen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	defer func() { master.Close(); <-readDone }()

	done := make(chan int, 1)
	go func() {
		done <- Run(context.Background(), []string{"monit", "--interval", "100ms"}, Stdio{In: slave, Out: slave, Err: slave}, e.deps)
	}()
	poll.Until(t, 20*time.Second, "monit to draw two frames", func() bool { return strings.Count(screen.String(), "keel monit") >= 2 })
	if _, err := master.Write([]byte("q")); err != nil {
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
	poll.Until(t, 20*time.Second, "monit to leave the alternate screen", func() bool { return strings.Contains(screen.String(), "\x1b[?1049l") })
	out := screen.String()
	if !strings.Contains(out, "\x1b[?1049h") || !strings.Contains(out, "\x1b[?1049l") || !strings.Contains(out, "web") {
		t.Errorf("screen %q", out)
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag {
		t.Errorf("terminal modes not restored: lflag %#x, was %#x", after.Lflag, before.Lflag)
	}
}
