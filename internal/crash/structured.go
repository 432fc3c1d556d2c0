package crash

import (
	"encoding/json"
	"strings"
)

// Structured logs: an app that logs JSON (log/slog, zap, pino, bunyan)
// writes its crash as one JSON record, often with the stack in a field —
// keel's own guard and serve packages log a recovered panic that way. A
// record with a Go trace in its stack field is read as that panic; the
// error and message fields title any other record.

// structuredWindow is how many of the last non-empty lines are searched
// for a record with a stack.
const structuredWindow = 30

// jsonRecord decodes a line that is one JSON object; ok is false for any
// other line (cheaply: the first byte must be '{').
func jsonRecord(l string) (map[string]any, bool) {
	l = strings.TrimSpace(l)
	if len(l) < 2 || l[0] != '{' || l[len(l)-1] != '}' {
		return nil, false
	}
	var m map[string]any
	if json.Unmarshal([]byte(l), &m) != nil {
		return nil, false
	}
	return m, true
}

// field returns the first of keys that m holds as a non-empty string.
func field(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok && strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

// findStructured looks, newest first, among the last lines for a JSON
// record whose stack field holds a Go goroutine trace, and reads it as a
// Go panic titled by the record's error (or message).
func findStructured(lines []string) (Report, bool) {
	seen := 0
	for i := len(lines) - 1; i >= 0 && seen < structuredWindow; i-- {
		if strings.TrimSpace(lines[i]) == "" {
			continue
		}
		seen++
		m, ok := jsonRecord(lines[i])
		if !ok {
			continue
		}
		stack := field(m, "stack", "stacktrace", "stack_trace")
		if !strings.Contains(stack, "goroutine ") {
			continue
		}
		value := field(m, "error", "err", "msg", "message")
		value = strings.TrimPrefix(value, "panic: ")
		trace := append([]string{"panic: " + value, ""}, splitLines([]byte(recoveredStack(stack)))...)
		b, ok := parseGo(trace, 0)
		if !ok {
			continue
		}
		rep := b.rep
		rep.Text = strings.Join(trace, "\n")
		return rep, true
	}
	return Report{}, false
}

// recoveredStack drops, from a stack taken inside a deferred recover
// (runtime/debug.Stack), the frames of the recovery itself: everything
// down to the runtime's panic frame, so the frame that panicked is on top.
func recoveredStack(stack string) string {
	lines := strings.Split(stack, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") && i+1 < len(lines) && strings.Contains(lines[i+1], "runtime/panic.go") {
			head := ""
			if len(lines) > 0 && isGoroutineHeader(lines[0]) {
				head = lines[0] + "\n"
			}
			return head + strings.Join(lines[i+2:], "\n")
		}
	}
	return stack
}

// structuredTitle titles a plain exit by its last JSON record: "msg:
// error", or either alone.
func structuredTitle(line string) (string, bool) {
	m, ok := jsonRecord(line)
	if !ok {
		return "", false
	}
	msg := field(m, "msg", "message")
	err := field(m, "error", "err")
	switch {
	case msg != "" && err != "":
		return msg + ": " + err, true
	case msg != "":
		return msg, true
	case err != "":
		return err, true
	}
	return "", false
}
