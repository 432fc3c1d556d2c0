package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/spec"
)

// Escape sequences of monit's one-frame output (see monitterm.go for the
// interactive view's).
const (
	escBold  = "\x1b[1m"
	escReset = "\x1b[0m"
)

func (r *runner) monitCommand() *cobra.Command {
	var interval time.Duration
	cmd := command("monit", "live view of CPU, memory, restarts and logs", exactArgs(), func(cmd *cobra.Command, args []string) error {
		if interval < 100*time.Millisecond {
			return usagef(cmd, "monit: --interval %s: want at least 100ms", interval)
		}
		ctx := cmd.Context()
		c, err := r.daemon(ctx)
		if err != nil {
			return fail("monit", err)
		}
		home, err := r.home()
		if err != nil {
			return fail("monit", err)
		}
		out, ansi := terminal(r.stdio.Out)
		if !ansi {
			// Not a terminal: one frame, no escapes, then exit.
			l, err := c.List(ctx)
			if err != nil {
				return fail("monit", err)
			}
			_, err = io.WriteString(r.stdio.Out, renderMonit(l, tailLogs(ctx, home, 10), 0, 0, time.Now(), false))
			return fail("monit", err)
		}
		in, _ := terminal(r.stdio.In)
		color := r.deps.Getenv("NO_COLOR") == ""
		return fail("monit", runMonitTUI(ctx, in, out, c, home, interval, color))
	})
	cmd.Long = "An interactive view of every app and instance (status, CPU, memory, restarts,\n" +
		"uptime), sparklines of the selected one's CPU and memory, and its live log tail.\n" +
		"Keys: ↑/↓ or j/k select, PgUp/PgDn/Home/End; r restart, R or l reload, s stop,\n" +
		"S start, + and - scale by one, each after a y/n confirmation; / filters the log\n" +
		"lines (enter keeps the filter, esc clears it); q or Ctrl-C quits. The list is\n" +
		"refreshed every --interval. When stdout is not a terminal, prints one frame and exits."
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between redraws")
	return cmd
}

// terminal returns w (a reader or a writer) as a file when it is a
// terminal.
func terminal(w any) (*os.File, bool) {
	f, ok := w.(*os.File)
	if !ok {
		return nil, false
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil, false
	}
	return f, true
}

// tailLogs returns the last n log lines of every app, as keel logs prints
// them, made safe for the screen. Errors leave the pane empty.
func tailLogs(ctx context.Context, home string, n int) []string {
	if n <= 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := logs.Print(ctx, &buf, logs.PrintOptions{Home: home, Target: spec.All, Lines: n}); err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// renderMonit draws one frame: a title, the instance table with a CPU bar,
// and as many log lines as fit in height (0: all given). Every line is at
// most width columns.
func renderMonit(l []api.Instance, logLines []string, width, height int, now time.Time, ansi bool) string {
	bold, reset := escBold, escReset
	if !ansi {
		bold, reset = "", ""
	}
	var b strings.Builder
	online := 0
	for _, in := range l {
		if in.Status == "online" {
			online++
		}
	}
	lines := []string{
		fmt.Sprintf("%skeel monit%s  %d instances, %d online  %s  (q to quit)", bold, reset, len(l), online, now.Format("15:04:05")),
		"",
	}
	var tb bytes.Buffer
	tw := newTable(&tb)
	fmt.Fprintln(tw, "NAME\tID\tPID\tSTATUS\tCPU\t\tMEM\tRESTARTS\tUPTIME\tINFO")
	for _, in := range l {
		pid, cpu, bar, mem, up := "-", "-", "", "-", "-"
		if in.Pid > 0 {
			pid = strconv.Itoa(in.Pid)
			cpu = fmt.Sprintf("%.1f%%", in.CPUPercent)
			bar = cpuBar(in.CPUPercent, 10)
			mem = humanBytes(in.MemoryBytes)
			if in.UptimeMs > 0 {
				up = humanDuration(time.Duration(in.UptimeMs) * time.Millisecond)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", in.App, in.Instance, pid, in.Status, cpu, bar, mem, in.Restarts, up, instanceInfo(in, now))
	}
	tw.Flush()
	lines = append(lines, strings.Split(strings.TrimSuffix(tb.String(), "\n"), "\n")...)
	if len(l) == 0 {
		lines = append(lines, "no apps yet: start one with 'keel start <script|binary|config>'")
	}
	if len(logLines) > 0 {
		lines = append(lines, "", bold+"logs"+reset)
		room := len(logLines)
		if height > 0 {
			room = max(height-len(lines), 0)
		}
		if room < len(logLines) {
			logLines = logLines[len(logLines)-room:]
		}
		for _, ll := range logLines {
			lines = append(lines, screenSafe(ll))
		}
	}
	for _, line := range lines {
		b.WriteString(clip(line, width))
		b.WriteByte('\n')
	}
	return b.String()
}

// cpuBar is a bar of n cells for a CPU percentage (100% fills it).
func cpuBar(pct float64, n int) string {
	full := int(pct / 100 * float64(n))
	full = min(max(full, 0), n)
	return "[" + strings.Repeat("|", full) + strings.Repeat(" ", n-full) + "]"
}

// screenSafe replaces control characters (escape sequences an app wrote
// included) and invalid UTF-8 so a log line cannot repaint the screen.
func screenSafe(s string) string {
	var b strings.Builder
	for _, r := range s { // invalid bytes come out as U+FFFD
		switch {
		case r == '\t':
			b.WriteString("    ")
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			b.WriteRune('·')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// clip cuts s to width runes (no limit when width ≤ 0), not counting the
// SGR escape sequences in it; a cut inside bold text ends with a reset.
func clip(s string, width int) string {
	if width <= 0 {
		return s
	}
	var b strings.Builder
	n, bold := 0, false
	for i := 0; i < len(s); {
		if s[i] == 0x1b {
			j := strings.IndexByte(s[i:], 'm')
			if j < 0 {
				break
			}
			seq := s[i : i+j+1]
			bold = seq == escBold
			b.WriteString(seq)
			i += j + 1
			continue
		}
		if n == width {
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		n++
		i += size
	}
	if bold {
		b.WriteString(escReset)
	}
	return b.String()
}
