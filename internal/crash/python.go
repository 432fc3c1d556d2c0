package crash

import (
	"strconv"
	"strings"
)

// Python writes, for an uncaught exception:
//
//	Traceback (most recent call last):
//	  File "/srv/app.py", line 10, in <module>          (frames, outermost first)
//	    main()                                          (source, then ^^^ or ~~^~~ markers on 3.11+)
//	  File "/srv/app.py", line 9, in main
//	    raise RuntimeError("config broken") from e
//	RuntimeError: config broken                         (type: message, maybe several lines)
//
// A chained exception is printed first, then "The above exception was the
// direct cause of the following exception:" or "During handling of the
// above exception, another exception occurred:", then the one that ended
// the program. An ExceptionGroup is drawn in a box of "  | " and "  +-"
// lines. A SyntaxError in the main script has no "Traceback" line, only
// the File line, the source and a caret.

const (
	pyTraceback = "Traceback (most recent call last):"
	pyGroup     = "  + Exception Group Traceback (most recent call last):"
)

// findPython returns the newest Python traceback in lines.
func findPython(lines []string) (block, bool) {
	var marks, syntax []int
	for i, l := range lines {
		switch {
		case strings.TrimRight(l, " ") == pyTraceback, strings.TrimRight(l, " ") == pyGroup:
			marks = keepLast(marks, i)
		case isPySyntaxError(l):
			syntax = keepLast(syntax, i)
		}
	}
	best := block{start: -1}
	for k := len(marks) - 1; k >= 0; k-- {
		if b, ok := parsePython(lines, marks[k]); ok {
			best = b
			break
		}
	}
	if n := len(syntax); n > 0 && syntax[n-1] >= best.end {
		if b, ok := parsePySyntax(lines, syntax[n-1]); ok {
			best = b
		}
	}
	return best, best.start >= 0
}

func isPySyntaxError(l string) bool {
	return strings.HasPrefix(l, "SyntaxError: ") || strings.HasPrefix(l, "IndentationError: ") ||
		strings.HasPrefix(l, "TabError: ")
}

// parsePython reads the traceback whose "Traceback" line is lines[t],
// with the exceptions chained before it.
func parsePython(lines []string, t int) (block, bool) {
	body, end := lines[t+1:], len(lines)
	if strings.TrimRight(lines[t], " ") == pyGroup {
		// The group's own traceback is the "  | " lines up to the first
		// "  +-" line; the box goes on with the sub-exceptions.
		var inner []string
		k := t + 1
		for ; k < len(lines) && strings.HasPrefix(lines[k], "  |"); k++ {
			inner = append(inner, strings.TrimPrefix(strings.TrimPrefix(lines[k], "  |"), " "))
		}
		for ; k < len(lines) && strings.HasPrefix(lines[k], "  ") &&
			(strings.HasPrefix(strings.TrimLeft(lines[k], " "), "|") || strings.HasPrefix(strings.TrimLeft(lines[k], " "), "+")); k++ {
		}
		body, end = inner, k
	}
	rep := Report{Kind: KindPython}
	frames, k := pyFrames(body)
	if k < 0 {
		return block{}, false
	}
	name, msg, _ := strings.Cut(body[k], ": ")
	if !pythonName(name) {
		return block{}, false
	}
	rep.ErrorType = name
	excLine := k
	msgLines := []string{msg}
	for k++; k < len(body) && body[k] != "" && len(msgLines) < maxMsgLines; k++ {
		if strings.TrimRight(body[k], " ") == pyTraceback {
			break
		}
		msgLines = append(msgLines, body[k])
	}
	rep.Message = strings.Join(msgLines, "\n")
	rep.Title = name
	if msg != "" {
		rep.Title = name + ": " + msg
	}
	if len(frames) > MaxFrames {
		frames = frames[len(frames)-MaxFrames:] // keep the innermost
	}
	reverse(frames) // innermost first, like the others
	rep.Frames = frames
	b := block{start: pyChainStart(lines, t), end: end, rep: rep}
	if strings.TrimRight(lines[t], " ") != pyGroup {
		b.end = t + 1 + k
		b.last = t + 1 + excLine + 1
	}
	return b, true
}

// pyFrames reads the frames of a traceback body and returns them with
// the index of the exception line after them, or -1 if there is none.
func pyFrames(body []string) ([]Frame, int) {
	var frames []Frame
	for k, l := range body {
		switch {
		case strings.HasPrefix(l, "  File \""):
			if len(frames) == 2*MaxFrames { // only the innermost MaxFrames are kept
				frames = append(frames[:0], frames[MaxFrames:]...)
			}
			frames = append(frames, pyFrame(l))
		case strings.HasPrefix(l, "    "), strings.HasPrefix(l, "  ["), strings.HasPrefix(l, "  ..."):
			// source lines, ^^^ markers, "[Previous line repeated 56 more times]"
		case l == "" || l[0] == ' ' || l[0] == '\t':
			return nil, -1
		default:
			return frames, k
		}
	}
	return nil, -1
}

// pyChainStart walks back from the Traceback line at t over the chained
// exceptions printed before it, and over an "Exception in thread …:"
// line.
func pyChainStart(lines []string, t int) int {
	start := t
	for n := 0; n < maxTries; n++ {
		i := start - 1
		for i >= 0 && lines[i] == "" {
			i--
		}
		if i < 0 {
			break
		}
		if strings.HasPrefix(lines[i], "Exception in thread ") || strings.HasPrefix(lines[i], "Unhandled exception in thread") {
			return i
		}
		if lines[i] != "The above exception was the direct cause of the following exception:" &&
			lines[i] != "During handling of the above exception, another exception occurred:" {
			break
		}
		found := -1
		for j := i - 1; j >= 0 && i-j < maxHeaderGap; j-- {
			if t := strings.TrimRight(lines[j], " "); t == pyTraceback || t == pyGroup {
				found = j
				break
			}
		}
		if found < 0 {
			break
		}
		start = found
	}
	return start
}

// parsePySyntax reads a SyntaxError report without a traceback: a
// File line at most four lines above lines[x].
func parsePySyntax(lines []string, x int) (block, bool) {
	for i := x - 1; i >= 0 && x-i <= 4; i-- {
		if strings.HasPrefix(lines[i], "  File \"") {
			name, msg, _ := strings.Cut(lines[x], ": ")
			rep := Report{Kind: KindPython, ErrorType: name, Message: msg, Title: lines[x]}
			rep.Frames = []Frame{pyFrame(lines[i])}
			return block{start: i, end: x + 1, rep: rep}, true
		}
	}
	return block{}, false
}

// pyFrame reads `  File "/srv/app.py", line 7, in main`.
func pyFrame(l string) Frame {
	rest := strings.TrimPrefix(l, "  File \"")
	f := Frame{}
	k := strings.Index(rest, "\", line ")
	if k < 0 {
		f.File = clip(strings.TrimSuffix(rest, "\""))
		f.InApp = pyInApp(f.File)
		return f
	}
	f.File = clip(rest[:k])
	rest = rest[k+len("\", line "):]
	num, fn, _ := strings.Cut(rest, ", in ")
	f.Line, _ = strconv.Atoi(num)
	f.Function = clip(fn)
	f.InApp = pyInApp(f.File)
	return f
}

// pyInApp: not the standard library, not an installed package, not
// frozen or generated code.
func pyInApp(file string) bool {
	return !(strings.HasPrefix(file, "<") || strings.Contains(file, "/site-packages/") ||
		strings.Contains(file, "/dist-packages/") || pyStdlib(file))
}

// pyStdlib: under a ".../lib/python3.11/" directory.
func pyStdlib(file string) bool {
	_, rest, ok := strings.Cut(file, "/lib/python")
	if !ok {
		return false
	}
	ver, _, ok := strings.Cut(rest, "/")
	if !ok || ver == "" {
		return false
	}
	for _, c := range ver {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

// pythonName matches an exception's (possibly qualified) class name.
func pythonName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case (c >= '0' && c <= '9') || c == '.':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func reverse(fs []Frame) {
	for i, j := 0, len(fs)-1; i < j; i, j = i+1, j-1 {
		fs[i], fs[j] = fs[j], fs[i]
	}
}
