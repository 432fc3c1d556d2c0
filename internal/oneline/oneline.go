// Package oneline folds text onto one line, for the places where keel
// prints what others wrote (errors, exit reasons, crash titles, a hook's
// output) where one line is the contract: the CLI's "keel: what: why",
// a table cell, a JSON error.
package oneline

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Fold returns s on one line: its lines trimmed, blank ones dropped, the
// rest joined with "; "; every run of white space or control characters
// inside a line becomes one space. With max > 0 the result has at most
// max runes, the last of them "…" when something was cut. Bytes that are
// not UTF-8 become U+FFFD, so the line is valid text.
func Fold(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		words := strings.FieldsFunc(l, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
		if len(words) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		for i, w := range words {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(w)
		}
		if max > 0 && b.Len() > 4*max {
			break // enough to cut from, however long s is
		}
	}
	out := b.String()
	if max > 0 && utf8.RuneCountInString(out) > max {
		rs := []rune(out)
		out = string(rs[:max-1]) + "…"
	}
	return out
}
