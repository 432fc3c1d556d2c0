package logs

import (
	"strconv"
	"time"
)

// MaxPayload is the most app bytes one record holds. A longer line is
// split into several records (see the package documentation).
const MaxPayload = 64 << 10

const (
	timeLen    = len("2006-01-02T15:04:05.000000000Z")
	timeLayout = "2006-01-02T15:04:05.000000000Z07:00" // with a UTC time, Z07:00 prints "Z"
	idLen      = 8

	kindLine    = '|' // the line ends here, with "\n"
	kindEOF     = '%' // the line ends here, without "\n" (the stream ended)
	kindPartial = '+' // the line continues in a later record with the same id
)

// appendTime appends t in the record time format (UTC, 30 bytes).
func appendTime(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, timeLayout)
}

// appendRecord appends one record. id is "" for a line that fits one
// record; otherwise off is the payload's offset within the line.
func appendRecord(b, ts []byte, kind byte, id string, off int64, payload []byte) []byte {
	b = append(b, ts...)
	b = append(b, ' ', kind)
	if id != "" {
		b = append(b, id...)
		b = append(b, '.')
		b = strconv.AppendInt(b, off, 10)
	}
	b = append(b, ' ')
	b = append(b, payload...)
	return append(b, '\n')
}

// record is one parsed record. payload aliases the parsed bytes.
type record struct {
	time    time.Time
	kind    byte
	id      string
	off     int64
	payload []byte
}

// parseRecord parses one file line (without its "\n"). ok is false when
// the line is not a well-formed record.
func parseRecord(b []byte) (r record, ok bool) {
	if len(b) < timeLen+3 || b[timeLen] != ' ' {
		return r, false
	}
	t, ok := parseTime(b[:timeLen])
	if !ok {
		return r, false
	}
	r.time = t
	m := b[timeLen+1:]
	r.kind = m[0]
	switch r.kind {
	case kindLine, kindEOF:
		if m[1] == ' ' {
			r.payload = m[2:]
			return r, true
		}
	case kindPartial:
	default:
		return r, false
	}
	// kind id "." offset SP payload
	if len(m) < 1+idLen+3 || m[1+idLen] != '.' {
		return r, false
	}
	id := m[1 : 1+idLen]
	for _, c := range id {
		if !isHex(c) {
			return r, false
		}
	}
	rest := m[2+idLen:]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > 18 || n >= len(rest) || rest[n] != ' ' {
		return r, false
	}
	off, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	if err != nil {
		return r, false
	}
	r.id = string(id)
	r.off = off
	r.payload = rest[n+1:]
	return r, true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// parseTime parses the fixed-width record time. It is strict: anything but
// exactly the format appendTime writes is refused.
func parseTime(b []byte) (time.Time, bool) {
	if len(b) != timeLen || b[4] != '-' || b[7] != '-' || b[10] != 'T' ||
		b[13] != ':' || b[16] != ':' || b[19] != '.' || b[29] != 'Z' {
		return time.Time{}, false
	}
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	var v [7]int
	fields := [7][2]int{{0, 4}, {5, 7}, {8, 10}, {11, 13}, {14, 16}, {17, 19}, {20, 29}}
	for i, f := range fields {
		n, ok := num(b[f[0]:f[1]])
		if !ok {
			return time.Time{}, false
		}
		v[i] = n
	}
	if v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60 {
		return time.Time{}, false
	}
	return time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], v[6], time.UTC), true
}
