package config

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unicode"

	"github.com/keel-run/keel/internal/spec"
)

// parseInt reads a whole number.
func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// parseBool reads true/false, yes/no, on/off or 1/0.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1", "t", "y":
		return true, nil
	case "false", "no", "off", "0", "f", "n":
		return false, nil
	}
	return false, fmt.Errorf("%q is not true or false", s)
}

// parseInstances reads keel's instance count: a number of at least 1, or
// "max" for one per CPU.
func parseInstances(s string) (int, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "max") {
		return runtime.NumCPU(), nil
	}
	n, err := strconv.Atoi(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number or \"max\"", s)
	}
	if n < 1 {
		return 0, fmt.Errorf("%d: want at least 1, or \"max\" for one per CPU", n)
	}
	return n, nil
}

// parsePM2Instances reads pm2's instance count: "max" or 0 is the CPU
// count, -N is the CPU count minus N (at least 1).
func parsePM2Instances(s string) (int, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "max") {
		return runtime.NumCPU(), nil
	}
	n, err := strconv.Atoi(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number or \"max\"", s)
	}
	cpus := runtime.NumCPU()
	switch {
	case n == 0:
		return cpus, nil
	case n < 0:
		return max(cpus+n, 1), nil
	}
	return n, nil
}

// parseDuration reads a Go duration or a bare integer of milliseconds;
// spec.ParseDuration refuses negative and overflowing values.
func parseDuration(s string) (spec.Duration, error) { return spec.ParseDuration(s) }

// parseSize reads a size such as 300M, 1G or a number of bytes;
// spec.ParseSize refuses negative and overflowing values.
func parseSize(s string) (spec.Size, error) { return spec.ParseSize(s) }

// parseExitCode reads one exit code, 0-255.
func parseExitCode(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("%q is not an exit code (0-255)", s)
	}
	return n, nil
}

// parseEnv reads KEY=VALUE.
func parseEnv(s string) (key, value string, err error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("%q: want KEY=VALUE", s)
	}
	if err := checkEnvName(key); err != nil {
		return "", "", err
	}
	return key, value, nil
}

// checkEnvName refuses names the kernel cannot carry.
func checkEnvName(k string) error {
	if k == "" || strings.ContainsAny(k, "=\x00") {
		return fmt.Errorf("%q is not an environment variable name", k)
	}
	return nil
}

// splitArgs splits a command line into words as a POSIX shell would, with
// no expansion: whitespace separates words; single quotes keep everything
// literally; double quotes keep everything but let a backslash escape
// $ ` " \ and newline; outside quotes a backslash escapes any character
// (and joins lines).
func splitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
	)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\'':
			inArg = true
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j == len(rs) {
				return nil, fmt.Errorf("%q: unterminated single quote", s)
			}
			cur.WriteString(string(rs[i+1 : j]))
			i = j
		case r == '"':
			inArg = true
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) {
					switch rs[j+1] {
					case '$', '`', '"', '\\':
						j++
					case '\n':
						j++
						continue
					}
				}
				cur.WriteRune(rs[j])
			}
			if j == len(rs) {
				return nil, fmt.Errorf("%q: unterminated double quote", s)
			}
			i = j
		case r == '\\':
			if i+1 == len(rs) {
				return nil, fmt.Errorf("%q: ends with a backslash", s)
			}
			i++
			if rs[i] == '\n' {
				continue
			}
			inArg = true
			cur.WriteRune(rs[i])
		case unicode.IsSpace(r):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			inArg = true
			cur.WriteRune(r)
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
