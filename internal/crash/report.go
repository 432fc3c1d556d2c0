package crash

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/keel-run/keel/internal/oneline"
	"github.com/keel-run/keel/internal/spec"
)

// Kind says what sort of crash a Report describes.
type Kind string

// The kinds Parse recognises.
const (
	KindGoPanic       Kind = "go-panic"       // "panic: …" and a goroutine trace
	KindGoFatal       Kind = "go-fatal"       // "fatal error: …" or a Go signal dump ("SIGSEGV: …", "SIGQUIT: quit")
	KindNodeException Kind = "node-exception" // an uncaught exception in Node
	KindNodeRejection Kind = "node-rejection" // an unhandled promise rejection in Node
	KindPython        Kind = "python"         // a Python traceback (or a SyntaxError report)
	KindSignal        Kind = "signal"         // a signal ended the process and it left no trace
	KindExit          Kind = "exit"           // a non-zero exit with no recognisable trace
)

// Bounds on Parse's input and output.
const (
	MaxInput     = 64 << 10 // bytes of each stream Parse looks at (the last ones)
	MaxText      = 16 << 10 // bytes of Report.Text
	MaxFrames    = 50       // frames kept in Report.Frames
	maxTitle     = 200      // runes in Report.Title
	maxMessage   = 4 << 10  // bytes in Report.Message
	maxField     = 512      // bytes of a frame's function or file
	staleLines   = 30       // other non-empty lines after a Python trace that make it stale
	staleFatal   = 10       // the same after a Go or Node trace, which the process cannot outlive
	maxTries     = 8        // candidate traces tried per language and stream
	tailLines    = 20       // lines of context kept for signal and exit reports
	maxMsgLines  = 20       // continuation lines of a multi-line message
	maxHeaderGap = 400      // lines searched between a trace's parts
)

// Frame is one stack frame, as the runtime printed it.
type Frame struct {
	Function string `json:"function"`         // "main.worker", "Timeout._onTimeout", "parse"
	File     string `json:"file"`             // as printed: absolute path, "node:internal/timers", "<anonymous>"
	Line     int    `json:"line,omitempty"`   // 0 when unknown
	Column   int    `json:"column,omitempty"` // Node only
	// InApp is false for frames of the language runtime and its standard
	// library and of third-party packages (node_modules, site-packages).
	InApp bool `json:"in_app"`
}

func (f Frame) String() string {
	var b strings.Builder
	b.WriteString(f.Function)
	if f.File != "" {
		b.WriteString(" (")
		b.WriteString(f.File)
		if f.Line > 0 {
			b.WriteString(":" + strconv.Itoa(f.Line))
		}
		b.WriteString(")")
	}
	return b.String()
}

// Report is what Parse makes of a crash.
type Report struct {
	Kind Kind `json:"kind"`
	// Title is one line for lists: "panic: runtime error: index out of
	// range [5] with length 3", "TypeError: Cannot read properties of
	// undefined (reading 'x')", "killed by SIGSEGV (segmentation fault)".
	Title string `json:"title"`
	// ErrorType is "panic", "fatal error" or the signal name for Go; the
	// error's name for Node and Python ("TypeError", "Error
	// [ERR_HTTP_HEADERS_SENT]", "json.decoder.JSONDecodeError"); the signal
	// name for KindSignal; "exit code N" for KindExit.
	ErrorType string `json:"error_type,omitempty"`
	// Message is the error message, possibly several lines.
	Message string `json:"message,omitempty"`
	// Frames are the crashing stack's frames, innermost first; for Go the
	// crashing goroutine's. At most MaxFrames.
	Frames []Frame `json:"frames,omitempty"`
	// CreatedBy is, for a Go panic in a goroutine other than main, the
	// function that started that goroutine.
	CreatedBy *Frame `json:"created_by,omitempty"`
	// Reason is the exit's Reason: why keel stopped the process, if it did.
	Reason string `json:"reason,omitempty"`
	// Source is the stream the text came from: "stderr", "stdout" or "".
	Source string `json:"source,omitempty"`
	// Text is the crash text cut from the stream, at most MaxText bytes;
	// for KindSignal and KindExit, the last lines of output.
	Text string `json:"text"`
}

// TopFrame returns the frame a reader (and Signature) should look at first:
// the innermost in-app frame, else the innermost frame that is not part of
// the language runtime, else the innermost frame.
func (r Report) TopFrame() (Frame, bool) {
	fs := signatureFrames(r.Frames, 1)
	if len(fs) == 0 {
		return Frame{}, false
	}
	return fs[0], true
}

// Parse finds the crash in the tails of an instance's stderr and stdout
// and describes it.
//
// It looks for a trace in stderr first, then in stdout, and the newest
// trace in a stream wins. A trace followed by more than a few lines of
// other output does not count: ten for Go and Node, whose traces end the
// process (so more output means a later run), thirty for Python, whose
// tracebacks may also be logged by a program that goes on. So the caller
// should pass only what the exited run wrote, when it can tell.
//
// With no trace, a signal in exit gives KindSignal and anything else
// KindExit, titled by the last non-empty line of stderr. A SIGKILL, or an
// exit keel asked for (a non-empty exit.Reason), is never attributed to
// text: the process could not have written about it.
//
// Parse never panics, whatever the input; it reads at most the last
// MaxInput bytes of each stream, in time linear in that.
func Parse(stderr, stdout []byte, exit spec.Exit) Report {
	errLines := splitLines(stderr)
	var rep Report
	found := false
	sigName := ""
	if exit.Signal != nil {
		sigName = normalSignalName(*exit.Signal)
	}
	if sigName != "SIGKILL" && exit.Reason == "" {
		outLines := splitLines(stdout)
		if rep, found = findTrace(errLines); found {
			rep.Source = "stderr"
		} else if rep, found = findTrace(outLines); found {
			rep.Source = "stdout"
		} else if rep, found = findStructured(errLines); found {
			rep.Source = "stderr"
		} else if rep, found = findStructured(outLines); found {
			rep.Source = "stdout"
		}
	}
	if !found {
		rep = plainExit(errLines, stdout, exit, sigName)
	}
	rep.Reason = exit.Reason
	rep.Title = oneline.Fold(rep.Title, maxTitle)
	if len(rep.Message) > maxMessage {
		rep.Message = cutUTF8(rep.Message, maxMessage)
	}
	rep.Text = cutText(rep.Text, MaxText)
	return rep
}

// findTrace returns the newest fresh trace among the languages' candidates.
func findTrace(lines []string) (Report, bool) {
	if len(lines) == 0 {
		return Report{}, false
	}
	best := block{start: -1}
	for _, find := range []func([]string) (block, bool){findGo, findNode, findPython} {
		b, ok := find(lines)
		if !ok {
			continue
		}
		if best.start < 0 || b.end > best.end || (b.end == best.end && b.start > best.start) {
			best = b
		}
	}
	limit := staleLines
	if best.rep.Kind != KindPython {
		limit = staleFatal
	}
	if best.start < 0 || stale(lines, best.anchor(), limit) {
		return Report{}, false
	}
	best.rep.Text = strings.Join(lines[best.start:best.end], "\n")
	return best.rep, true
}

// block is a recognised trace: lines[start:end] and what it says.
type block struct {
	start, end int
	rep        Report
	// last, if not 0, is the index after the line that must be recent for
	// the trace to count, when that is not the end: a Python exception's
	// first line, since what follows may be its message or later output.
	last int
}

func (b block) anchor() int {
	if b.last > 0 {
		return b.last
	}
	return b.end
}

// stale reports whether more than limit non-empty lines follow end.
func stale(lines []string, end, limit int) bool {
	n := 0
	for _, l := range lines[end:] {
		if strings.TrimSpace(l) != "" {
			if n++; n > limit {
				return true
			}
		}
	}
	return false
}

// plainExit describes an exit without a trace: a signal, or a code.
func plainExit(errLines []string, stdout []byte, exit spec.Exit, sigName string) Report {
	tail := lastLines(errLines, tailLines)
	source := "stderr"
	if len(tail) == 0 {
		tail = lastLines(splitLines(stdout), tailLines)
		source = "stdout"
		if len(tail) == 0 {
			source = ""
		}
	}
	rep := Report{Text: strings.Join(tail, "\n"), Source: source}
	prefix := ""
	if exit.Reason != "" {
		prefix = exit.Reason + ": "
	}
	switch {
	case sigName != "":
		rep.Kind = KindSignal
		rep.ErrorType = sigName
		rep.Message = signalMeaning(sigName)
		rep.Title = prefix + "killed by " + sigName
		if rep.Message != "" {
			rep.Title += " (" + rep.Message + ")"
		}
	default:
		rep.Kind = KindExit
		code := "unknown"
		if exit.Code != nil {
			code = strconv.Itoa(*exit.Code)
		}
		rep.ErrorType = "exit code " + code
		if last := lastNonEmpty(errLines); last != "" {
			rep.Message = strings.TrimSpace(last)
			if t, ok := structuredTitle(last); ok {
				rep.Message = t
			}
			rep.Title = prefix + rep.Message
		} else {
			rep.Title = prefix + "exited with code " + code
		}
	}
	return rep
}

// normalSignalName turns "SIGSEGV", "segv" or "11" into "SIGSEGV".
func normalSignalName(s string) string {
	if sig, err := spec.ParseSignal(s); err == nil {
		return spec.SignalName(sig)
	}
	return oneline.Fold(s, 32)
}

var signalMeanings = map[string]string{
	"SIGSEGV": "segmentation fault", "SIGABRT": "aborted",
	"SIGBUS": "bus error", "SIGFPE": "floating-point exception", "SIGILL": "illegal instruction",
	"SIGTERM": "terminated", "SIGINT": "interrupt", "SIGHUP": "hangup", "SIGPIPE": "broken pipe",
	"SIGQUIT": "quit", "SIGTRAP": "trace trap", "SIGSYS": "bad system call",
	"SIGXCPU": "CPU time limit exceeded", "SIGXFSZ": "file size limit exceeded",
	"SIGUSR1": "user signal 1", "SIGUSR2": "user signal 2", "SIGALRM": "alarm clock",
}

func signalMeaning(name string) string { return signalMeanings[name] }

// splitLines cuts the last MaxInput bytes of b into lines, dropping a
// partial first line when the cut fell inside one, a trailing newline,
// carriage returns and ANSI escape sequences, and making it valid UTF-8.
func splitLines(b []byte) []string {
	if len(b) > MaxInput {
		b = b[len(b)-MaxInput:]
		if i := indexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return nil
	}
	s := stripANSI(strings.ToValidUTF8(string(b), "\uFFFD"))
	s = strings.TrimSuffix(s, "\n")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// stripANSI removes CSI escape sequences ("\x1b[31m") in one pass.
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && s[j] >= 0x20 && s[j] <= 0x3f { // parameter and intermediate bytes
				j++
			}
			if j < len(s) && s[j] >= 0x40 && s[j] <= 0x7e { // final byte
				i = j
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func lastLines(lines []string, n int) []string {
	end := len(lines)
	for end > 0 && strings.TrimSpace(lines[end-1]) == "" {
		end--
	}
	start := max(end-n, 0)
	return lines[start:end]
}

func lastNonEmpty(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			return lines[i]
		}
	}
	return ""
}

// cutUTF8 returns at most n bytes of s, not splitting a rune.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cutText bounds crash text to n bytes: it keeps the head (where Go and
// Node put the error and the crashing frames) and the tail (where Python
// puts them), at line boundaries, and says how much was cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const marker = "\n… %d bytes cut …\n"
	if n < 4*len(marker) {
		return cutUTF8(s, n)
	}
	room := n - len(marker) - 16
	head := cutUTF8(s, room*3/4)
	if i := strings.LastIndexByte(head, '\n'); i > 0 {
		head = head[:i]
	}
	tailStart := len(s) - (room - len(head))
	for tailStart < len(s) && !utf8.RuneStart(s[tailStart]) {
		tailStart++
	}
	tail := s[tailStart:]
	if i := strings.IndexByte(tail, '\n'); i >= 0 && i < len(tail)-1 {
		tail = tail[i+1:]
	}
	cut := len(s) - len(head) - len(tail)
	return head + fmt.Sprintf(marker, cut) + tail
}
