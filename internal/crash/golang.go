package crash

import (
	"strconv"
	"strings"
)

// Go's runtime writes, on a fatal panic:
//
//	panic: runtime error: index out of range [5] with length 3   (or "fatal error: …", or "SIGSEGV: …" + "PC=…")
//		panic: a second panic raised while the first was running  (nested, tab-indented)
//	[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a2007]
//
//	goroutine 22 [running]:                                       (the crashing goroutine comes first)
//	main.index(...)
//		/src/main.go:13
//	main.worker(0x0?, 0x0?)
//		/src/main.go:18 +0x65
//	created by main.main in goroutine 1
//		/src/main.go:28 +0x525
//
//	goroutine 1 [semacquire]:                                     (GOTRACEBACK=all: the others)
//	…
//
// "fatal error: stack overflow" is preceded by "runtime: …" lines and
// followed by a "runtime stack:" section before the goroutines.

// findGo returns the newest Go trace in lines.
func findGo(lines []string) (block, bool) {
	var marks []int
	for i := range lines {
		if isGoHeader(lines, i) {
			marks = append(marks, i)
			if len(marks) > maxTries {
				marks = marks[1:]
			}
		}
	}
	for k := len(marks) - 1; k >= 0; k-- {
		if b, ok := parseGo(lines, marks[k]); ok {
			return b, true
		}
	}
	return block{}, false
}

func isGoHeader(lines []string, i int) bool {
	l := lines[i]
	if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
		return true
	}
	return isGoSignalDump(lines, i)
}

// isGoSignalDump matches "SIGSEGV: segmentation violation" followed by
// "PC=0x… m=0 sigcode=0", unless it follows a "-----" line: with
// GOTRACEBACK=crash the runtime adds a "SIGQUIT: quit" dump of every other
// thread after the one that crashed, each after such a line.
func isGoSignalDump(lines []string, i int) bool {
	name, _, ok := strings.Cut(lines[i], ": ")
	if !ok || !isSignalName(name) || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "PC=") {
		return false
	}
	for k := i - 1; k >= 0 && i-k < 3; k-- {
		if lines[k] == "-----" {
			return false
		}
	}
	return true
}

func isSignalName(s string) bool {
	if len(s) < 4 || len(s) > 12 || !strings.HasPrefix(s, "SIG") {
		return false
	}
	for _, c := range s[3:] {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func isGoroutineHeader(l string) bool {
	return strings.HasPrefix(l, "goroutine ") && strings.HasSuffix(l, "]:")
}

// parseGo reads the trace whose header is lines[i].
func parseGo(lines []string, i int) (block, bool) {
	start := i
	for start > 0 && i-start < 10 && strings.HasPrefix(lines[start-1], "runtime: ") {
		start--
	}
	rep := Report{}
	var values [][]string // the panic chain; each value is its lines
	head := lines[i]
	switch {
	case strings.HasPrefix(head, "panic: "):
		rep.Kind, rep.ErrorType = KindGoPanic, "panic"
		values = append(values, []string{strings.TrimPrefix(head, "panic: ")})
	case strings.HasPrefix(head, "fatal error: "):
		rep.Kind, rep.ErrorType = KindGoFatal, "fatal error"
		values = append(values, []string{strings.TrimPrefix(head, "fatal error: ")})
	default:
		name, desc, _ := strings.Cut(head, ": ")
		rep.Kind, rep.ErrorType = KindGoFatal, name
		values = append(values, []string{desc})
	}

	// The rest of the header: nested panics, continuation lines of a
	// multi-line value, the [signal …] line.
	j := i + 1
header:
	for ; j < len(lines); j++ {
		l := lines[j]
		switch {
		case strings.HasPrefix(l, "\tpanic: "):
			values = append(values, []string{strings.TrimPrefix(l, "\tpanic: ")})
		case strings.HasPrefix(l, "\t"):
			last := len(values) - 1
			if len(values[last]) < maxMsgLines {
				values[last] = append(values[last], strings.TrimPrefix(l, "\t"))
			}
		case strings.HasPrefix(l, "[signal "), strings.HasPrefix(l, "PC="),
			strings.HasPrefix(l, "runtime: "), strings.HasPrefix(l, "fatal error: "):
		default:
			break header
		}
	}
	last := values[len(values)-1]
	last[0] = trimRecovered(last[0])
	rep.Message = strings.Join(last, "\n")
	rep.Title = rep.ErrorType + ": " + last[0] // "panic: …", "fatal error: …", "SIGQUIT: quit"

	// Find the crashing goroutine: the first goroutine header after the
	// header (a "runtime stack:" section may come between).
	g := -1
	for k := j; k < len(lines) && k-j < maxHeaderGap; k++ {
		l := lines[k]
		if isGoroutineHeader(l) {
			g = k
			break
		}
		if k > j && isGoHeader(lines, k) {
			break
		}
	}
	if g < 0 {
		// GOTRACEBACK=none prints no goroutines: accept the header alone
		// when nothing follows it.
		for _, l := range lines[j:] {
			if strings.TrimSpace(l) != "" {
				return block{}, false
			}
		}
		return block{start: start, end: j, rep: rep}, true
	}

	frames, created, end := parseGoroutine(lines, g+1)
	rep.Frames = frames
	rep.CreatedBy = created
	end = skipOtherGoroutines(lines, end)
	return block{start: start, end: end, rep: rep}, true
}

// trimRecovered drops " [recovered]" / " [recovered, repanicked]" from a
// panic value.
func trimRecovered(v string) string {
	if strings.HasSuffix(v, "]") {
		if k := strings.LastIndex(v, " [recovered"); k >= 0 {
			return v[:k]
		}
	}
	return v
}

// parseGoroutine reads one goroutine's frames from lines[k:] up to the
// blank line that ends them; it returns the index after the last line
// it consumed.
func parseGoroutine(lines []string, k int) ([]Frame, *Frame, int) {
	var frames []Frame
	var created *Frame
	for k < len(lines) {
		l := lines[k]
		switch {
		case l == "":
			return frames, created, k
		case strings.HasPrefix(l, "created by "):
			fn := strings.TrimPrefix(l, "created by ")
			if c := strings.Index(fn, " in goroutine "); c >= 0 {
				fn = fn[:c]
			}
			f := Frame{Function: clip(fn)}
			k++
			if k < len(lines) && strings.HasPrefix(lines[k], "\t") {
				f.File, f.Line = goLocation(lines[k])
				k++
			}
			f.InApp = goInApp(f.Function)
			created = &f
		case strings.HasPrefix(l, "...") && strings.HasSuffix(l, "..."):
			k++ // "...additional frames elided...", "...53 frames elided..."
		case strings.HasPrefix(l, "\t"):
			k++ // a location without its function
		case strings.HasSuffix(l, ")"):
			f := Frame{Function: clip(goFunction(l))}
			k++
			if k < len(lines) && strings.HasPrefix(lines[k], "\t") {
				f.File, f.Line = goLocation(lines[k])
				k++
			}
			f.InApp = goInApp(f.Function)
			if len(frames) < MaxFrames {
				frames = append(frames, f)
			}
		default:
			return frames, created, k
		}
	}
	return frames, created, k
}

// skipOtherGoroutines moves past the other goroutines GOTRACEBACK=all
// prints and the register dump GOTRACEBACK=crash adds.
func skipOtherGoroutines(lines []string, end int) int {
	k := end
	for k < len(lines) {
		n := k
		for n < len(lines) && lines[n] == "" {
			n++
		}
		if n == len(lines) {
			break
		}
		switch {
		case isGoroutineHeader(lines[n]):
			n++
			for n < len(lines) && lines[n] != "" {
				n++
			}
		case isRegisterLine(lines[n]):
			for n < len(lines) && isRegisterLine(lines[n]) {
				n++
			}
		case lines[n] == "-----": // GOTRACEBACK=crash: the next thread's dump
			n++
		case strings.HasPrefix(lines[n], "PC="), isSignalName(strings.SplitN(lines[n], ":", 2)[0]):
			n++
		default:
			return end
		}
		k, end = n, n
	}
	return end
}

// isRegisterLine matches "rax    0x0" and "rflags 0x212".
func isRegisterLine(l string) bool {
	name, val, ok := strings.Cut(l, " ")
	if !ok || len(name) == 0 || len(name) > 8 {
		return false
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return strings.HasPrefix(strings.TrimLeft(val, " "), "0x")
}

// goFunction strips the argument list from "main.(*T).run(0xc000010000, 0x1)".
func goFunction(l string) string {
	if !strings.HasSuffix(l, ")") {
		return l
	}
	depth := 0
	for k := len(l) - 1; k >= 0; k-- {
		switch l[k] {
		case ')':
			depth++
		case '(':
			depth--
			if depth == 0 {
				if k == 0 {
					return l
				}
				return l[:k]
			}
		}
	}
	return l
}

// goLocation reads "\t/src/main.go:18 +0x65 fp=… sp=… pc=…".
func goLocation(l string) (string, int) {
	l = strings.TrimPrefix(l, "\t")
	if k := strings.Index(l, " +0x"); k >= 0 {
		l = l[:k]
	} else if k := strings.Index(l, " fp="); k >= 0 {
		l = l[:k]
	}
	file, line := splitFileLine(l)
	return clip(file), line
}

// splitFileLine splits "path:12" into "path" and 12; without a numeric
// suffix it returns l and 0.
func splitFileLine(l string) (string, int) {
	k := strings.LastIndexByte(l, ':')
	if k < 0 {
		return l, 0
	}
	n, err := strconv.Atoi(l[k+1:])
	if err != nil || n < 0 {
		return l, 0
	}
	return l[:k], n
}

// goPackage returns the package path of a function name:
// "github.com/a/b.(*T).M" → "github.com/a/b", "main.main.func1" → "main".
func goPackage(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	if dot < 0 {
		return fn
	}
	return fn[:slash+1+dot]
}

// goRuntime reports whether fn belongs to the Go runtime itself.
func goRuntime(fn string) bool {
	if fn == "panic" {
		return true
	}
	p := goPackage(fn)
	return p == "runtime" || strings.HasPrefix(p, "runtime/") || strings.HasPrefix(p, "internal/runtime/")
}

// goInApp: not the standard library. A standard package's path has no
// dot in its first element; "main" is the app's.
func goInApp(fn string) bool {
	p := goPackage(fn)
	if p == "main" {
		return true
	}
	first, _, _ := strings.Cut(p, "/")
	return strings.Contains(first, ".")
}

func clip(s string) string { return cutUTF8(s, maxField) }
