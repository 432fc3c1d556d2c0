package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/spec"
)

// The terminal side of the interactive monit: raw mode, the alternate
// screen, key decoding, resize, and the goroutines that fetch the list,
// run actions and follow the selected app's logs. It is written on
// golang.org/x/term and ANSI escapes rather than a TUI library: see
// README, "keel monit", for the measurements behind that choice.

// Escape sequences of the interactive monit.
const (
	escEnter = "\x1b[?1049h" + // the alternate screen
		"\x1b[?25l" + // hide the cursor
		"\x1b[?7l" + // no autowrap: a line that is too wide is cut, never wrapped
		"\x1b[2J"
	escLeave = "\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l"
)

// inputMsg says that the keyboard is gone (the terminal hung up).
type inputMsg struct{ err error }

// panicMsg carries a panic of one of monit's goroutines to the loop, which
// panics again once the terminal is restored.
type panicMsg struct {
	value any
	stack []byte
}

// logPaneLines is how many lines per instance the log pane starts with.
const logPaneLines = 100

// runMonitTUI runs the interactive monit on the terminal out until q or
// Ctrl-C is pressed, ctx is done or the terminal goes away. Keys come from
// the terminal in, which it puts in raw mode; in may be nil (stdin is not
// a terminal): then the view runs without keys until ctx is done. The
// terminal is restored on every return, errors and panics included.
func runMonitTUI(ctx context.Context, in, out *os.File, src monitSource, home string, interval time.Duration, color bool) (err error) {
	// A panic of one of the goroutines below ends monit as it would have,
	// but only after every other deferred call restored the terminal.
	var crashed *panicMsg
	defer func() {
		if crashed != nil {
			panic(fmt.Sprintf("%v\n\nin a goroutine of keel monit:\n%s", crashed.value, crashed.stack))
		}
	}()
	if in != nil {
		old, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer term.Restore(int(in.Fd()), old)
	}
	if _, err := io.WriteString(out, escEnter); err != nil {
		return fmt.Errorf("writing to the terminal: %w", err)
	}
	defer io.WriteString(out, escLeave)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: every goroutine below ends with ctx
	defer cancel()

	msgs := make(chan any, 64)
	send := func(msg any) bool {
		select {
		case msgs <- msg:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// spawn runs f in a goroutine whose panic reaches the loop: a panic
	// anywhere else would end the process with the terminal still raw.
	spawn := func(f func()) {
		wg.Go(func() {
			defer func() {
				if v := recover(); v != nil {
					send(panicMsg{v, debug.Stack()})
				}
			}()
			f()
		})
	}
	if in != nil {
		spawn(func() { readKeys(ctx, int(in.Fd()), send) })
	}
	// Resizes arrive as SIGWINCH; this loop owns the screen, so it is the
	// one place that listens for them (main keeps SIGINT and SIGTERM).
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	defer signal.Stop(winch)

	m := newMonitModel(interval, color, time.Now())
	m.keysOff = in == nil
	if w, h, err := term.GetSize(int(out.Fd())); err == nil && w > 0 && h > 0 {
		m.update(sizeMsg{w, h})
	}

	var stopLogs context.CancelFunc = func() {}
	defer func() { stopLogs() }()
	followGen := -1
	run := func(effects []any) {
		for _, e := range effects {
			switch e := e.(type) {
			case fetchEffect:
				spawn(func() {
					l, err := src.List(ctx)
					send(listMsg{at: time.Now(), l: l, err: err})
				})
			case actionEffect:
				spawn(func() {
					res, err := act(ctx, src, e)
					send(actionMsg{actionEffect: e, res: res, err: err})
				})
			}
		}
		// The log pane follows the selection.
		if t, gen, ok := m.logTarget(); gen != followGen {
			stopLogs()
			stopLogs, followGen = func() {}, gen
			if ok {
				lctx, lcancel := context.WithCancel(ctx)
				stopLogs = lcancel
				spawn(func() { followLogs(lctx, home, t, gen, send) })
			}
		}
	}

	tick := time.NewTicker(interval)
	defer tick.Stop()
	run(m.update(tickMsg(time.Now())))
	var last string
	for {
		frame := drawFrame(m.view(true))
		if frame != last {
			if _, err := io.WriteString(out, frame); err != nil {
				return fmt.Errorf("writing to the terminal: %w", err)
			}
			last = frame
		}
		select {
		case <-ctx.Done():
			return nil
		case t := <-tick.C:
			run(m.update(tickMsg(t)))
		case <-winch:
			if w, h, err := term.GetSize(int(out.Fd())); err == nil && w > 0 && h > 0 {
				run(m.update(sizeMsg{w, h}))
				last = "" // the terminal may have kept nothing of the old frame
			}
		case msg := <-msgs:
			// Take a burst (log lines, key repeat) whole, then draw once.
			for more := true; more && !m.quit; {
				switch msg := msg.(type) {
				case inputMsg:
					return msg.err
				case panicMsg:
					crashed = &msg
					return nil
				}
				run(m.update(msg))
				select {
				case msg = <-msgs:
				default:
					more = false
				}
			}
		}
		if m.quit {
			return nil
		}
	}
}

// act runs one action against the daemon.
func act(ctx context.Context, src monitSource, e actionEffect) (api.Result, error) {
	switch e.verb {
	case "restart", "start":
		return src.Restart(ctx, e.t)
	case "reload":
		return src.Reload(ctx, e.t)
	case "stop":
		return src.Stop(ctx, e.t)
	case "scale":
		return src.Scale(ctx, e.t.App, e.n)
	}
	return api.Result{}, fmt.Errorf("unknown action %q", e.verb)
}

// drawFrame places every line at its row, clearing what is right of it,
// so that a frame never depends on what the screen held before.
func drawFrame(lines []string) string {
	var b strings.Builder
	for i, l := range lines {
		b.WriteString("\x1b[" + strconv.Itoa(i+1) + ";1H")
		b.WriteString(l)
		b.WriteString("\x1b[0m\x1b[K")
	}
	b.WriteString("\x1b[J")
	return b.String()
}

// readKeys decodes the keys typed on the terminal fd and sends them until
// ctx is done. It polls with a timeout so that it never blocks past ctx;
// an escape byte alone for that long is the Esc key.
func readKeys(ctx context.Context, fd int, send func(any) bool) {
	buf := make([]byte, 256)
	var pending []byte
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			send(inputMsg{fmt.Errorf("reading keys: %w", err)})
			return
		}
		var keys []string
		switch {
		case n == 0:
			keys, pending = decodeKeys(pending, true)
		case fds[0].Revents&unix.POLLIN != 0:
			k, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if err != nil || k == 0 {
				send(inputMsg{fmt.Errorf("reading keys: the terminal closed (%v)", orEOF(err))})
				return
			}
			keys, pending = decodeKeys(append(pending, buf[:k]...), false)
		default: // POLLHUP, POLLERR, POLLNVAL
			send(inputMsg{errors.New("reading keys: the terminal hung up")})
			return
		}
		for _, k := range keys {
			if !send(keyMsg(k)) {
				return
			}
		}
	}
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// csiKey names the key of a CSI sequence (ESC [ seq), "" for one monit
// does not use. A switch rather than a map: a package-level map would be
// built at init in every keel process, daemon and keepers included.
func csiKey(seq string) string {
	switch seq {
	case "A":
		return "up"
	case "B":
		return "down"
	case "C":
		return "right"
	case "D":
		return "left"
	case "H", "1~", "7~":
		return "home"
	case "F", "4~", "8~":
		return "end"
	case "5~":
		return "pgup"
	case "6~":
		return "pgdown"
	}
	return ""
}

// ss3Key names the key of an SS3 sequence (ESC O c), sent by terminals in
// application cursor mode.
func ss3Key(c byte) string {
	switch c {
	case 'A', 'B', 'C', 'D', 'H', 'F':
		return csiKey(string(c))
	}
	return ""
}

// decodeKeys turns the bytes a terminal sent into key names: "up", "down",
// "pgup", "pgdown", "home", "end", "left", "right", "esc", "enter",
// "backspace", "ctrl+c", or the character typed. Sequences it does not know are
// skipped. An incomplete sequence at the end is returned as rest, unless
// flush: then a lone ESC is the Esc key and other fragments are dropped.
func decodeKeys(b []byte, flush bool) (keys []string, rest []byte) {
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == 0x1b:
			if i+1 == len(b) {
				if !flush {
					return keys, b[i:]
				}
				keys = append(keys, "esc")
				i++
				continue
			}
			switch b[i+1] {
			case '[':
				j := i + 2 // parameters and intermediates, then the final byte
				for j < len(b) && b[j] >= 0x20 && b[j] <= 0x3f {
					j++
				}
				if j == len(b) {
					if !flush {
						return keys, b[i:]
					}
					return keys, nil
				}
				if k := csiKey(string(b[i+2 : j+1])); k != "" {
					keys = append(keys, k)
				}
				i = j + 1
			case 'O':
				if i+2 == len(b) {
					if !flush {
						return keys, b[i:]
					}
					return keys, nil
				}
				if k := ss3Key(b[i+2]); k != "" {
					keys = append(keys, k)
				}
				i += 3
			default: // Alt+key arrives as ESC key
				keys = append(keys, "esc")
				i++
			}
		case c == 0x03:
			keys = append(keys, "ctrl+c")
			i++
		case c == '\r' || c == '\n':
			keys = append(keys, "enter")
			i++
		case c == 0x7f || c == 0x08:
			keys = append(keys, "backspace")
			i++
		case c < 0x20 || c == 0x7f:
			i++
		default:
			if !utf8.FullRune(b[i:]) && !flush {
				return keys, b[i:]
			}
			r, size := utf8.DecodeRune(b[i:])
			if r != utf8.RuneError {
				keys = append(keys, string(r))
			}
			i += size
		}
	}
	return keys, nil
}

// followLogs sends the last lines of t's logs, then every new one, as
// logMsg of generation gen until ctx is done.
func followLogs(ctx context.Context, home string, t spec.Target, gen int, send func(any) bool) {
	sink := &logSink{ctx: ctx, gen: gen, send: send}
	err := logs.Print(ctx, sink, logs.PrintOptions{Home: home, Target: t, Lines: logPaneLines, Follow: true, JSON: true})
	if err != nil && ctx.Err() == nil {
		send(logMsg{gen: gen, lines: []logLine{{inst: "keel", stderr: true, text: screenSafe(err.Error())}}})
	}
}

// logSink turns the JSON lines logs.Print writes into logMsg batches.
type logSink struct {
	ctx  context.Context
	gen  int
	send func(any) bool
	part []byte // an unfinished line
}

func (s *logSink) Write(p []byte) (int, error) {
	s.part = append(s.part, p...)
	var batch []logLine
	for {
		i := bytes.IndexByte(s.part, '\n')
		if i < 0 {
			break
		}
		var j struct {
			App      string `json:"app"`
			Instance int    `json:"instance"`
			Stream   string `json:"stream"`
			Line     string `json:"line"`
		}
		if err := json.Unmarshal(s.part[:i], &j); err == nil {
			batch = append(batch, logLine{inst: instanceLabel(j.App, j.Instance), stderr: j.Stream == "err", text: screenSafe(j.Line)})
		}
		s.part = s.part[i+1:]
	}
	s.part = append(s.part[:0:0], s.part...)
	if len(batch) > 0 && !s.send(logMsg{gen: s.gen, lines: batch}) {
		return 0, s.ctx.Err()
	}
	return len(p), nil
}
