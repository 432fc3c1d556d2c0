package http1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// DefaultMaxHeaderBytes bounds a request's or a response's request or
// status line and header fields together, unless told otherwise.
const DefaultMaxHeaderBytes = 64 << 10

// errHeaderTooLarge is what readLine returns when the budget is spent.
var errHeaderTooLarge = errors.New("header too large")

// Header holds a message's header fields by canonical name
// (CanonicalKey): "Content-Type", not "content-type".
type Header map[string][]string

// Get returns the first value of key, or "".
func (h Header) Get(key string) string {
	if v := h[CanonicalKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values of key with value.
func (h Header) Set(key, value string) { h[CanonicalKey(key)] = []string{value} }

// Add appends value to the values of key.
func (h Header) Add(key, value string) {
	k := CanonicalKey(key)
	h[k] = append(h[k], value)
}

// Del removes key.
func (h Header) Del(key string) { delete(h, CanonicalKey(key)) }

// has reports whether the comma-separated values of key hold token,
// compared without regard to case (as in Connection: close).
func (h Header) has(key, token string) bool {
	for _, v := range h[CanonicalKey(key)] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// write writes the fields in name order, skipping the names in skip (the
// framing fields the writer sets itself) and names that are not tokens.
// Values have control characters (CR and LF among them) replaced by a
// space, so a field can never end early.
func (h Header) write(b *strings.Builder, skip ...string) {
	keys := make([]string, 0, len(h))
	for k := range h {
		if validToken(k) && !slices.Contains(skip, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(cleanValue(v))
			b.WriteString("\r\n")
		}
	}
}

// cleanValue is v with control characters but tab turned into spaces, and
// without leading or trailing space. Other bytes stay as they are.
func cleanValue(v string) string {
	if !validValue(v) {
		b := []byte(v)
		for i, c := range b {
			if (c < ' ' && c != '\t') || c == 0x7f {
				b[i] = ' '
			}
		}
		v = string(b)
	}
	return strings.Trim(v, " \t")
}

// CanonicalKey returns key with its first letter and every letter after a
// hyphen in upper case and the rest in lower case: "content-length" →
// "Content-Length". A key that is not a valid field name is returned as
// it is.
func CanonicalKey(key string) string {
	if !validToken(key) {
		return key
	}
	upper := true
	for i := 0; i < len(key); i++ {
		c := key[i]
		if (upper && 'a' <= c && c <= 'z') || (!upper && 'A' <= c && c <= 'Z') {
			return canonicalize(key)
		}
		upper = c == '-'
	}
	return key
}

func canonicalize(key string) string {
	b := []byte(key)
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
		upper = c == '-'
	}
	return string(b)
}

// validToken reports whether s is a token (RFC 9110 5.6.2): a method or a
// field name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validValue reports whether s may be a field value: no control
// characters but tab.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// readLine reads one line ending in LF (an optional CR before it is
// dropped) and charges it to *budget; it fails with errHeaderTooLarge
// when the budget is spent, io.EOF if br ends before the line's first
// byte and io.ErrUnexpectedEOF if it ends after. The line may alias br's buffer until the next
// read.
func readLine(br *bufio.Reader, budget *int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		*budget -= len(frag)
		if *budget < 0 {
			return nil, errHeaderTooLarge
		}
		if err == nil {
			if line == nil {
				line = frag
			} else {
				line = append(line, frag...)
			}
			break
		}
		if err == io.EOF && (line != nil || len(frag) > 0) {
			return nil, io.ErrUnexpectedEOF
		}
		if err != bufio.ErrBufferFull {
			return nil, err
		}
		line = append(line, frag...)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// syntaxError is a malformed line in a message's head.
type syntaxError struct{ msg string }

func (e *syntaxError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &syntaxError{msg: fmt.Sprintf(format, args...)}
}

// readHeader reads header fields up to the empty line that ends them. It
// returns a *syntaxError for a malformed field, errHeaderTooLarge, or br's
// error (io.ErrUnexpectedEOF for its end).
func readHeader(br *bufio.Reader, budget *int) (Header, error) {
	h := Header{}
	for {
		line, err := readLine(br, budget)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, malformed("header line %q: folded lines are not allowed", truncate(line))
		}
		name, value, ok := strings.Cut(string(line), ":")
		if !ok {
			return nil, malformed("header line %q: no colon", truncate(line))
		}
		if !validToken(name) {
			return nil, malformed("header field name %q is not a token", truncate([]byte(name)))
		}
		value = strings.Trim(value, " \t")
		if !validValue(value) {
			return nil, malformed("header field %s: control character in its value", name)
		}
		h.Add(name, value)
	}
}

// truncate shortens b for an error message.
func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
