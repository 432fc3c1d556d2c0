package spec

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
)

// Change is one difference between two definitions of an app: a config
// key, with its old and new values as JSON text ("" when absent). An
// environment variable is reported by name only, as Key "env.NAME" with
// Secret set and no values, because values may be secrets.
type Change struct {
	Key    string `json:"key"`
	Old    string `json:"old,omitempty"`
	New    string `json:"new,omitempty"`
	Secret bool   `json:"secret,omitempty"`
	// What, for a secret: "added", "removed" or "changed".
	What string `json:"what,omitempty"`
}

// String renders a change for one line of a plan: `script: "/a.js" → "/b.js"`,
// `env GREETING changed`.
func (c Change) String() string {
	if c.Secret {
		return "env " + strings.TrimPrefix(c.Key, "env.") + " " + c.What
	}
	old, new := c.Old, c.New
	if old == "" {
		old = "(none)"
	}
	if new == "" {
		new = "(none)"
	}
	return c.Key + ": " + old + " → " + new
}

// notCompared are the fields Diff leaves out: the name identifies the app,
// the instance count is a scale rather than a replacement, and the
// environment of the command that applied the file is not part of the file.
var notCompared = []string{"name", "instances", "env", "shell_env"}

// Diff lists what differs between two definitions of an app, config key
// by config key in key order, env variables last; nil when they define the
// same processes. Both should be normalized (Normalize) for defaults not
// to count as changes.
func Diff(old, new *App) []Change {
	om, nm := fields(old), fields(new)
	keys := map[string]bool{}
	for k := range om {
		keys[k] = true
	}
	for k := range nm {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var out []Change
	for _, k := range sorted {
		if !bytes.Equal(om[k], nm[k]) {
			out = append(out, Change{Key: k, Old: string(om[k]), New: string(nm[k])})
		}
	}
	return append(out, envDiff(old.Env, new.Env)...)
}

// fields is an app's JSON form, key by key, compacted, without the keys
// Diff does not compare.
func fields(a *App) map[string]json.RawMessage {
	data, err := json.Marshal(a)
	if err != nil {
		return nil // an App always marshals
	}
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil
	}
	for _, k := range notCompared {
		delete(m, k)
	}
	return m
}

func envDiff(old, new map[string]string) []Change {
	var out []Change
	for k, v := range new {
		ov, ok := old[k]
		switch {
		case !ok:
			out = append(out, Change{Key: "env." + k, Secret: true, What: "added"})
		case ov != v:
			out = append(out, Change{Key: "env." + k, Secret: true, What: "changed"})
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			out = append(out, Change{Key: "env." + k, Secret: true, What: "removed"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Paths are where an app's cwd and script lead once symbolic links are
// followed: what a process spawned now would run. A deploy that switches a
// `current -> releases/N` link changes them and nothing in the definition.
type Paths struct {
	Cwd    string `json:"cwd,omitempty"`
	Script string `json:"script,omitempty"`
}

// ResolvePaths follows the links in a's cwd and script (a script that is
// not a path, such as a command found in PATH, is left out). A path that
// cannot be resolved is kept as written.
func ResolvePaths(a *App) Paths {
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return p
	}
	var p Paths
	if a.Cwd != "" {
		p.Cwd = real(a.Cwd)
	}
	if filepath.IsAbs(a.Script) {
		p.Script = real(a.Script)
	}
	return p
}

// PathChanges reports, as one Change with Key "release", that the resolved
// paths moved: old → new of the cwd when it moved, else of the script.
func PathChanges(old, new Paths) []Change {
	switch {
	case old.Cwd != new.Cwd:
		return []Change{{Key: "release", Old: strconvQuote(old.Cwd), New: strconvQuote(new.Cwd)}}
	case old.Script != new.Script:
		return []Change{{Key: "release", Old: strconvQuote(old.Script), New: strconvQuote(new.Script)}}
	}
	return nil
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
