package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"pgregory.net/rapid"

	"github.com/keel-run/keel/internal/spec"
)

// decodeApp decodes one app given as a map of keys in format f ("yaml" or
// "json"), without the path checks of Load.
func decodeApp(t *rapid.T, f string, app map[string]any) (*spec.App, error) {
	doc := map[string]any{"apps": []any{app}}
	var (
		root *treeNode
		err  error
	)
	switch f {
	case "yaml":
		b, merr := yaml.Marshal(doc)
		if merr != nil {
			t.Fatal(merr)
		}
		root, err = parseYAML(b)
	case "json":
		b, merr := json.Marshal(doc)
		if merr != nil {
			t.Fatal(merr)
		}
		root, err = parseJSON(b)
	}
	if err != nil {
		t.Fatalf("%s does not parse: %v", f, err)
	}
	ads, err := (&decoder{file: "t." + f, dialect: keelDialect}).decodeRoot(root)
	if err != nil {
		return nil, err
	}
	return ads[0].app, nil
}

var formats = rapid.SampledFrom([]string{"yaml", "json"})

func TestPropDuration(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := time.Duration(rapid.Int64Range(0, math.MaxInt64).Draw(t, "d"))
		var a spec.App
		if err := Set(&a, "kill-timeout", d.String()); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if a.KillTimeout.D() != d {
			t.Fatalf("%s read back as %s", d, a.KillTimeout)
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		ms := rapid.Int64Range(0, math.MaxInt64/int64(time.Millisecond)).Draw(t, "ms")
		f := formats.Draw(t, "format")
		// A bare number in a file, or as text, is milliseconds.
		var v any = ms
		if rapid.Bool().Draw(t, "as text") {
			v = strconv.FormatInt(ms, 10)
		}
		a, err := decodeApp(t, f, map[string]any{"script": "x", "min_uptime": v})
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Duration(ms) * time.Millisecond; a.MinUptime.D() != want {
			t.Fatalf("%d ms read back as %s", ms, a.MinUptime)
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		// Anything else is either refused or a non-negative duration; too
		// large never wraps around.
		s := rapid.OneOf(rapid.String(), rapid.StringMatching(`-?[0-9]{1,25}(ms|s|m|h|us|ns)?`)).Draw(t, "s")
		d, err := parseDuration(s)
		if err == nil && d < 0 {
			t.Fatalf("%q read as negative %s", s, d)
		}
		if n, perr := strconv.ParseInt(strings.TrimSpace(s), 10, 64); perr == nil && err == nil && d.D() != time.Duration(n)*time.Millisecond {
			t.Fatalf("%q read as %s", s, d)
		}
	})
}

func TestPropSize(t *testing.T) {
	units := []struct {
		suffix string
		shift  uint
	}{{"", 0}, {"K", 10}, {"M", 20}, {"G", 30}, {"KB", 10}, {"m", 20}, {"g", 30}, {"T", 40}}
	rapid.Check(t, func(t *rapid.T) {
		u := rapid.SampledFrom(units).Draw(t, "unit")
		n := rapid.Int64Range(0, math.MaxInt64>>(u.shift+1)).Draw(t, "n")
		if float64(n) > 1<<53 {
			n = n >> 11 // stay where a float64 is exact
		}
		text := strconv.FormatInt(n, 10) + u.suffix
		f := formats.Draw(t, "format")
		var v any = text
		if u.suffix == "" && rapid.Bool().Draw(t, "as number") {
			v = n
		}
		a, err := decodeApp(t, f, map[string]any{"script": "x", "max_memory": v})
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if want := spec.Size(n << u.shift); a.MaxMemory != want {
			t.Fatalf("%q read back as %d, want %d", text, a.MaxMemory, want)
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		s := rapid.OneOf(rapid.String(), rapid.StringMatching(`-?[0-9.e+]{1,30}[KMGTkmgt]?B?`)).Draw(t, "s")
		if v, err := parseSize(s); err == nil && v < 0 {
			t.Fatalf("%q read as negative %d", s, v)
		}
	})
}

func TestPropList(t *testing.T) {
	word := rapid.StringMatching(`[a-zA-Z0-9:/._ "'\\$-]{1,12}`)
	rapid.Check(t, func(t *rapid.T) {
		f := formats.Draw(t, "format")
		key := rapid.SampledFrom([]string{"listen", "watch", "watch_ignore", "interpreter_args", "args"}).Draw(t, "key")
		vals := rapid.SliceOfN(word, 1, 6).Draw(t, "vals")
		if key == "watch" {
			for i, v := range vals {
				if v == "true" || v == "false" {
					vals[i] = v + "x"
				}
			}
		}
		get := func(a *spec.App) []string {
			switch key {
			case "listen":
				return a.Listen
			case "watch":
				return a.Watch
			case "watch_ignore":
				return a.WatchIgnore
			case "interpreter_args":
				return a.InterpreterArgs
			}
			return a.Args
		}
		// A list is kept item for item.
		a, err := decodeApp(t, f, map[string]any{"script": "x", key: vals})
		if err != nil {
			t.Fatal(err)
		}
		if got := get(a); fmt.Sprint(got) != fmt.Sprint(vals) || len(got) != len(vals) {
			t.Fatalf("%q read back as %q", vals, got)
		}
		// One value is a list of one, except args, which a shell would split.
		one := vals[0]
		if key == "args" || key == "interpreter_args" {
			one = shellQuote(one)
		}
		a, err = decodeApp(t, f, map[string]any{"script": "x", key: one})
		if err != nil {
			t.Fatal(err)
		}
		if got := get(a); len(got) != 1 || got[0] != vals[0] {
			t.Fatalf("%q read back as %q", one, got)
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		codes := rapid.SliceOfN(rapid.IntRange(0, 255), 1, 5).Draw(t, "codes")
		f := formats.Draw(t, "format")
		a, err := decodeApp(t, f, map[string]any{"script": "x", "stop_exit_codes": codes})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a.StopExitCodes) != fmt.Sprint(codes) {
			t.Fatalf("%v read back as %v", codes, a.StopExitCodes)
		}
	})
}

// shellQuote quotes s for a POSIX shell, choosing randomly-equivalent forms
// is not needed: single quotes keep everything but a single quote.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// doubleQuote quotes s in double quotes, escaping what a shell would expand.
func doubleQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")
	return `"` + r.Replace(s) + `"`
}

// backslashQuote escapes every special character with a backslash.
func backslashQuote(s string) string {
	if s == "" {
		return "''"
	}
	var b strings.Builder
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,", r)) {
			if r == '\n' {
				b.WriteString("'\n'")
				continue
			}
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func TestPropSplitArgs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		args := rapid.SliceOf(rapid.String()).Draw(t, "args")
		quotes := []func(string) string{shellQuote, doubleQuote, backslashQuote}
		var parts []string
		for i, a := range args {
			q := rapid.SampledFrom(quotes).Draw(t, fmt.Sprintf("quote%d", i))
			parts = append(parts, q(a))
		}
		sep := rapid.SampledFrom([]string{" ", "  ", "\t", " \n "}).Draw(t, "sep")
		line := strings.Join(parts, sep)
		got, err := splitArgs(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if len(got) != len(args) {
			t.Fatalf("%q split into %q, want %q", line, got, args)
		}
		for i := range args {
			if got[i] != args[i] {
				t.Fatalf("%q split into %q, want %q", line, got, args)
			}
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		// Plain words split on white space, as strings.Fields does.
		words := rapid.SliceOf(rapid.StringMatching(`[a-zA-Z0-9=:/.,_-]{1,10}`)).Draw(t, "words")
		line := strings.Join(words, " ")
		got, err := splitArgs(line)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(strings.Fields(line)) {
			t.Fatalf("%q split into %q (%v)", line, got, err)
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		// Anything at all splits or is refused; never a panic.
		_, _ = splitArgs(rapid.String().Draw(t, "s"))
	})
}

func TestPropJSONCommentsKeepStrings(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		vals := rapid.SliceOf(rapid.OneOf(rapid.String(), rapid.StringMatching(`[/*,\]} "\\]{0,12}`))).Draw(t, "vals")
		b, err := json.Marshal(map[string]any{"apps": vals})
		if err != nil {
			t.Fatal(err)
		}
		if got := stripJSONC(b); string(got) != string(b) {
			t.Fatalf("stripJSONC changed %s into %s", b, got)
		}
	})
}
