package crash

import "strings"

// Node (v12 to v22) writes, for an uncaught exception:
//
//	/srv/app.js:1                                   (where it was thrown: file:line,
//	setTimeout(() => { throw new Error('boom') })    the source line,
//	                   ^                             and a caret under the column)
//
//	Error: boom                                     (name: message, maybe several lines)
//	    at Timeout._onTimeout (/srv/app.js:1:26)    (frames, innermost first)
//	    at listOnTimeout (node:internal/timers:581:17) {
//	  code: 'E_BOOM'                                (own properties, if any)
//	}
//
//	Node.js v20.20.2                                (since v14 or so)
//
// An unhandled rejection of an Error prints the same. Node 15–18 headed it
// with node:internal/process/promises and "triggerUncaughtException(err,
// true /* fromPromise */)"; Node 20 instead points the header at the place
// the Error was constructed (so the caret sits under its "new", where a
// throw would have put it under the "throw"). A rejection with a value
// that is not an Error reads "[UnhandledPromiseRejection: This error
// originated … with the reason "…".]" (brackets until v18, none from v20).

// findNode returns the newest Node crash in lines.
func findNode(lines []string) (block, bool) {
	var footers, carets, runs []int
	for i, l := range lines {
		switch {
		case isNodeFooter(l):
			footers = keepLast(footers, i)
		case isCaretLine(l) && i >= 2 && isNodeLocation(lines[i-2]):
			carets = keepLast(carets, i)
		case isNodeFrame(l) && (i == 0 || !isNodeFrame(lines[i-1])):
			runs = keepLast(runs, i)
		}
	}
	// The footer marks a crash for sure: try those first, newest first.
	for k := len(footers) - 1; k >= 0; k-- {
		if b, ok := nodeBeforeFooter(lines, footers[k], prev(footers, k)); ok {
			return b, true
		}
	}
	// Older Node, or a footer that was cut off: a caret header, or a run
	// of frames under an error line.
	best := block{start: -1}
	for k := len(carets) - 1; k >= 0; k-- {
		c := carets[k]
		if e := nextNonBlank(lines, c+1, len(lines)); e >= 0 {
			if b, ok := parseNodeFrom(lines, c-2, e, len(lines)); ok {
				best = b
				break
			}
		}
	}
	for k := len(runs) - 1; k >= 0; k-- {
		r := runs[k]
		if best.start >= 0 && r < best.end {
			break // part of (or older than) the header's block
		}
		if e := nodeErrorLineAbove(lines, r); e >= 0 {
			if b, ok := parseNodeFrom(lines, -1, e, len(lines)); ok {
				best = b
				break
			}
		}
	}
	return best, best.start >= 0
}

func keepLast(xs []int, i int) []int {
	xs = append(xs, i)
	if len(xs) > maxTries {
		xs = xs[1:]
	}
	return xs
}

func prev(xs []int, k int) int {
	if k > 0 {
		return xs[k-1]
	}
	return -1
}

func isNodeFooter(l string) bool {
	return strings.HasPrefix(l, "Node.js v") && len(l) > 9 && l[9] >= '0' && l[9] <= '9'
}

// isCaretLine matches a line of spaces and carets with at least one caret.
func isCaretLine(l string) bool {
	t := strings.TrimLeft(l, " \t")
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] != '^' {
			return strings.TrimSpace(t[i:]) == ""
		}
	}
	return true
}

// isNodeLocation matches the first header line: "/srv/app.js:12",
// "node:internal/process/promises:288", "file:///srv/app.mjs:1".
func isNodeLocation(l string) bool {
	if l == "" || l[0] == ' ' || l[0] == '\t' {
		return false
	}
	_, n := splitFileLine(l)
	return n > 0
}

func isNodeFrame(l string) bool { return strings.HasPrefix(l, "    at ") }

func nextNonBlank(lines []string, from, limit int) int {
	for i := from; i < limit && i-from < maxHeaderGap; i++ {
		if strings.TrimSpace(lines[i]) != "" {
			return i
		}
	}
	return -1
}

// nodeBeforeFooter parses the crash that ends at the footer lines[f]; the
// previous footer (or -1) bounds the search.
func nodeBeforeFooter(lines []string, f, prevFooter int) (block, bool) {
	lo := max(prevFooter+1, f-maxHeaderGap, 0)
	// The header: the newest caret line with a location two lines up.
	for c := f - 1; c >= lo+2; c-- {
		if isCaretLine(lines[c]) && isNodeLocation(lines[c-2]) {
			if e := nextNonBlank(lines, c+1, f); e >= 0 {
				b, ok := parseNodeFrom(lines, c-2, e, f)
				if ok {
					b.end = f + 1
				}
				return b, ok
			}
		}
	}
	// No header: the error line above the newest run of frames, else the
	// first non-blank line after the previous crash.
	for i := f - 1; i >= lo; i-- {
		if isNodeFrame(lines[i]) {
			for i > lo && isNodeFrame(lines[i-1]) {
				i--
			}
			if e := nodeErrorLineAbove(lines, i); e >= lo {
				b, ok := parseNodeFrom(lines, -1, e, f)
				if ok {
					b.end = f + 1
				}
				return b, ok
			}
			break
		}
	}
	if e := nextNonBlank(lines, lo, f); e >= 0 {
		b, ok := parseNodeFrom(lines, -1, e, f)
		if ok {
			b.end = f + 1
		}
		return b, ok
	}
	return block{}, false
}

// nodeErrorLineAbove finds the error line of the run of frames that starts
// at lines[r]: the nearest line above that reads "Name: message", else the
// line right above.
func nodeErrorLineAbove(lines []string, r int) int {
	for i := r - 1; i >= 0 && r-i <= maxMsgLines; i-- {
		l := lines[i]
		if l == "" || isNodeFrame(l) {
			break
		}
		if name, _, ok := strings.Cut(trimErrorLine(l), ": "); ok && validErrorName(name) {
			return i
		}
	}
	if r > 0 && strings.TrimSpace(lines[r-1]) != "" && !isNodeFrame(lines[r-1]) {
		return r - 1
	}
	return -1
}

// parseNodeFrom reads a Node crash whose error line is lines[e], with its
// header at lines[h] (h < 0: none), not reading at or beyond limit.
func parseNodeFrom(lines []string, h, e, limit int) (block, bool) {
	rep := Report{Kind: KindNodeException}
	errLine := trimErrorLine(lines[e])
	var msg []string
	if name, m, ok := strings.Cut(errLine, ": "); ok && validErrorName(name) {
		rep.ErrorType = name
		msg = append(msg, m)
	} else if validErrorName(errLine) && (e+1 < limit && isNodeFrame(lines[e+1])) {
		rep.ErrorType = errLine // an Error with an empty message
	} else {
		msg = append(msg, errLine) // a thrown value that is not an Error: "{ a: 1 }", "42"
	}
	// The rest of the message: up to the frames when they come soon
	// (a message may hold blank lines), else up to a blank line. An error
	// line ending in " {" has properties and no frames.
	k := e + 1
	if strings.HasSuffix(lines[e], " {") {
		k = skipProps(lines, k, limit)
	} else {
		msgEnd := -1
		for i := k; i < limit && i-k < 2*maxMsgLines && !isNodeFooter(lines[i]); i++ {
			if isNodeFrame(lines[i]) {
				msgEnd = i
				break
			}
		}
		if msgEnd < 0 {
			for msgEnd = k; msgEnd < limit && lines[msgEnd] != "" && msgEnd-k < maxMsgLines; msgEnd++ {
			}
		}
		for ; k < msgEnd; k++ {
			if !strings.HasPrefix(lines[k], "(Use `node --trace-uncaught") && len(msg) < maxMsgLines {
				msg = append(msg, lines[k])
			}
		}
	}
	for ; k < limit; k++ {
		l := lines[k]
		if !isNodeFrame(l) {
			if strings.HasPrefix(l, "    ... ") { // "... 4 lines matching cause stack trace ..."
				continue
			}
			break
		}
		f, async := nodeFrame(l)
		if len(rep.Frames) < MaxFrames {
			rep.Frames = append(rep.Frames, f)
		}
		if async && f.InApp {
			rep.Kind = KindNodeRejection
		}
		if strings.HasSuffix(l, " {") {
			k = skipProps(lines, k+1, limit) - 1
		}
	}
	if rep.ErrorType == "" && len(rep.Frames) == 0 && h < 0 {
		return block{}, false // a bare line is not a crash
	}
	rep.Message = strings.TrimRight(strings.Join(msg, "\n"), " \n")
	if nodeRejection(lines, h, rep) {
		rep.Kind = KindNodeRejection
	}
	first, _, _ := strings.Cut(rep.Message, "\n")
	switch {
	case rep.ErrorType == "" && rep.Kind == KindNodeRejection:
		rep.Title = "Unhandled rejection: " + first
	case rep.ErrorType == "":
		rep.Title = "Uncaught " + first
	case first == "":
		rep.Title = rep.ErrorType
	default:
		rep.Title = rep.ErrorType + ": " + first
	}
	if rep.ErrorType == "UnhandledPromiseRejection" {
		// The reason is the end of a long sentence: put it in the title.
		if k := strings.Index(first, "The promise rejected with the reason "); k >= 0 {
			rep.Title = rep.ErrorType + ": t" + first[k+1:]
		}
	}
	start := e
	if h >= 0 {
		start = h
	}
	return block{start: start, end: k, rep: rep}, true
}

// trimErrorLine drops the decorations around an error line:
// "[UnhandledPromiseRejection: …] {" → "UnhandledPromiseRejection: …",
// "Uncaught Error: x" → "Error: x".
func trimErrorLine(l string) string {
	l = strings.TrimSuffix(l, " {")
	if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") && strings.Contains(l, ": ") {
		l = l[1 : len(l)-1]
	}
	return strings.TrimPrefix(l, "Uncaught ")
}

// skipProps moves past an "{ … }" property block whose closing "}" is at
// column 0, if it ends before limit; else it returns k unchanged.
func skipProps(lines []string, k, limit int) int {
	for i := k; i < limit && i-k < maxHeaderGap; i++ {
		if lines[i] == "}" {
			return i + 1
		}
	}
	return k
}

// validErrorName matches an error's name: an identifier, dots allowed,
// optionally followed by a code: "TypeError", "Error [ERR_X]".
func validErrorName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	name, code, hasCode := strings.Cut(s, " [")
	if hasCode {
		if !strings.HasSuffix(code, "]") || len(code) < 2 {
			return false
		}
		for _, c := range code[:len(code)-1] {
			if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
				return false
			}
		}
	}
	for i, c := range name {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_', c == '$':
		case (c >= '0' && c <= '9') || c == '.':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return name != ""
}

// nodeFrame reads "    at async fn [as x] (file:line:col)" or
// "    at file:line:col".
func nodeFrame(l string) (Frame, bool) {
	s := strings.TrimSuffix(strings.TrimPrefix(l, "    at "), " {")
	async := false
	if rest, ok := strings.CutPrefix(s, "async "); ok {
		s, async = rest, true
	}
	fn, loc := "", s
	if strings.HasSuffix(s, ")") {
		depth := 0
		for k := len(s) - 1; k >= 0; k-- {
			if s[k] == ')' {
				depth++
			} else if s[k] == '(' {
				if depth--; depth == 0 {
					fn, loc = strings.TrimSpace(s[:k]), s[k+1:len(s)-1]
					break
				}
			}
		}
	}
	if fn == "" {
		fn = "<anonymous>"
	}
	// "eval at f (file:1:1), <anonymous>:1:17": the code that ran was the eval's.
	if k := strings.LastIndex(loc, ", "); k >= 0 {
		loc = loc[k+2:]
	}
	f := Frame{Function: clip(fn)}
	f.File, f.Line, f.Column = nodeLocation(loc)
	f.File = clip(f.File)
	f.InApp = nodeInApp(f.File)
	return f, async
}

// nodeLocation splits "file:line:col".
func nodeLocation(loc string) (string, int, int) {
	file, col := splitFileLine(loc)
	if col == 0 {
		return loc, 0, 0
	}
	file2, line := splitFileLine(file)
	if line == 0 {
		return file, col, 0 // "file:line"
	}
	return file2, line, col
}

// nodeInApp: not Node's own code, not node_modules, not eval or native.
func nodeInApp(file string) bool {
	switch {
	case file == "", file == "native", strings.HasPrefix(file, "<"), strings.HasPrefix(file, "["),
		strings.HasPrefix(file, "node:"), strings.HasPrefix(file, "internal/"),
		strings.Contains(file, "/node_modules/"), strings.HasPrefix(file, "index "):
		return false
	}
	// Before "node:" prefixes, core modules were bare names: "events.js".
	return strings.ContainsAny(file, "/\\")
}

// nodeRejection decides whether a crash with header lines[h:h+3] was an
// unhandled rejection rather than an uncaught exception (see the comment
// at the top of the file).
func nodeRejection(lines []string, h int, rep Report) bool {
	if rep.Kind == KindNodeRejection || rep.ErrorType == "UnhandledPromiseRejection" {
		return true
	}
	if h < 0 {
		return false
	}
	loc, src, caret := lines[h], lines[h+1], lines[h+2]
	if strings.Contains(src, "fromPromise") { // Node 15–18
		return true
	}
	if strings.HasPrefix(loc, "node:internal/modules/run_main") && strings.Contains(src, "triggerUncaughtException") {
		return true // a top-level await in an ES module rejected with a non-Error
	}
	if len(rep.Frames) == 0 {
		return false
	}
	// Node 20: the header points where the Error was made, and the caret
	// sits under a "new" that no "throw" precedes (or that an async
	// function threw).
	top := rep.Frames[0]
	file, line := splitFileLine(loc)
	col := strings.IndexByte(caret, '^') + 1
	if file != top.File || line != top.Line || col != top.Column || col > len(src) {
		return false
	}
	if !strings.HasPrefix(src[col-1:], "new ") {
		return false
	}
	if !strings.HasSuffix(strings.TrimRight(src[:col-1], " \t"), "throw") {
		return true
	}
	// "throw new X" with the caret under "new": the throw was in an async
	// function, unless it was the top level of an ES module.
	return len(rep.Frames) < 2 || rep.Frames[1].Function != "ModuleJob.run"
}
