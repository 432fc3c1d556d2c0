package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads Go-style strings ("500ms", "3s",
// "1m") or a bare integer meaning milliseconds (as pm2 writes them), and
// writes itself as a Go-style string.
type Duration time.Duration

// ParseDuration parses a Go-style duration or a bare integer of milliseconds.
// Negative values are refused.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("duration %q is too large", s)
	}
	if err == nil {
		if n < 0 {
			return 0, fmt.Errorf("duration %q is negative", s)
		}
		if n > int64(math.MaxInt64/int64(time.Millisecond)) {
			return 0, fmt.Errorf("duration %q is too large", s)
		}
		return Duration(time.Duration(n) * time.Millisecond), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want e.g. 500ms, 3s, 1m or milliseconds", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return Duration(d), nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a Go-style string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go-style string or a number of milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Size is a number of bytes that reads "300M", "1G", "512K", "10MB" or a
// bare number of bytes. Units are powers of 1024, as pm2 reads them.
type Size int64

// ParseSize parses a size such as 300M, 1G, 64K or 1048576.
func ParseSize(s string) (Size, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	t = strings.TrimSuffix(t, "B")
	if t == "" {
		return 0, fmt.Errorf("size %q has no number", s)
	}
	mult := int64(1)
	switch t[len(t)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	if mult > 1 {
		t = t[:len(t)-1]
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsNaN(f) {
		return 0, fmt.Errorf("size %q: want e.g. 300M, 1G or a number of bytes", s)
	}
	if f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(f * float64(mult)), nil
}

func (s Size) String() string {
	switch {
	case s == 0:
		return "0"
	case s%(1<<30) == 0:
		return strconv.FormatInt(int64(s)>>30, 10) + "G"
	case s%(1<<20) == 0:
		return strconv.FormatInt(int64(s)>>20, 10) + "M"
	case s%(1<<10) == 0:
		return strconv.FormatInt(int64(s)>>10, 10) + "K"
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalJSON writes the size as a number of bytes.
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(int64(s)) }

// UnmarshalJSON reads a number of bytes or a string such as "300M".
func (s *Size) UnmarshalJSON(b []byte) error {
	var str string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
	} else {
		str = string(b)
	}
	v, err := ParseSize(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}
