package logs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/keel-run/keel/internal/spec"
)

// Stream names.
const (
	Stdout = "out"
	Stderr = "err"
)

// Dir is the directory that holds every log file of a keel home.
func Dir(home string) string { return filepath.Join(home, "logs") }

// Path is the log file of one stream ("out" or "err") of one instance:
// $home/logs/<app>-<instance>-<stream>.log.
func Path(home, app string, instance int, stream string) string {
	return filepath.Join(Dir(home), app+"-"+strconv.Itoa(instance)+"-"+stream+".log")
}

// rotatedPath is the n-th rotated file of path (n ≥ 1; 1 is the newest).
func rotatedPath(path string, n int) string { return path + "." + strconv.Itoa(n) }

// source is one stream of one instance, as found on disk.
type source struct {
	app      string
	instance int
	stream   string
	path     string // the current file (it may not exist right now)
}

func (s *source) key() string { return s.path }

// parseName reads "<app>-<instance>-<stream>.log" or the same with ".<n>"
// appended (a rotated file). It parses from the right because app names may
// contain '-' and digits. rotation is 0 for the current file.
func parseName(name string) (app string, instance int, stream string, rotation int, ok bool) {
	base := name
	if i := strings.LastIndexByte(name, '.'); i >= 0 && !strings.HasSuffix(name, ".log") {
		n, ok := parseDecimal(name[i+1:])
		if !ok || n < 1 {
			return "", 0, "", 0, false
		}
		base, rotation = name[:i], n
	}
	base, found := strings.CutSuffix(base, ".log")
	if !found {
		return "", 0, "", 0, false
	}
	i := strings.LastIndexByte(base, '-')
	if i < 0 {
		return "", 0, "", 0, false
	}
	stream = base[i+1:]
	if stream != Stdout && stream != Stderr {
		return "", 0, "", 0, false
	}
	base = base[:i]
	i = strings.LastIndexByte(base, '-')
	if i <= 0 {
		return "", 0, "", 0, false
	}
	instance, ok = parseDecimal(base[i+1:])
	if !ok {
		return "", 0, "", 0, false
	}
	return base[:i], instance, stream, rotation, true
}

// parseDecimal reads a canonical non-negative decimal ("0", "17"; not "",
// "+1", "01") of at most 9 digits.
func parseDecimal(s string) (int, bool) {
	if s == "" || len(s) > 9 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// listSources finds every stream in home's log directory that target (and
// errOnly) selects, whether its current file or only rotated files exist.
// The result is sorted by app, instance, then out before err. A missing
// log directory is no error: there is nothing to read yet.
func listSources(home string, target spec.Target, errOnly bool) ([]*source, error) {
	dir := Dir(home)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading log directory: %w", err)
	}
	seen := map[string]*source{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		app, inst, stream, _, ok := parseName(e.Name())
		if !ok {
			continue
		}
		if target.App != "" && app != target.App ||
			target.App != "" && target.Instance >= 0 && inst != target.Instance ||
			errOnly && stream != Stderr {
			continue
		}
		s := &source{app: app, instance: inst, stream: stream, path: filepath.Join(dir, app+"-"+strconv.Itoa(inst)+"-"+stream+".log")}
		if _, dup := seen[s.key()]; !dup {
			seen[s.key()] = s
		}
	}
	out := make([]*source, 0, len(seen))
	for _, s := range seen {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.app != b.app {
			return a.app < b.app
		}
		if a.instance != b.instance {
			return a.instance < b.instance
		}
		return a.stream > b.stream // "out" before "err"
	})
	return out, nil
}
