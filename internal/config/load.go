package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/keel-run/keel/internal/spec"
)

// format is how a config file is written.
type format int

const (
	formatNone format = iota
	formatYAML
	formatJSON
	formatTOML
	formatJS
)

// formatOf tells a config file's format and dialect from its name.
func formatOf(path string) (format, dialect) {
	base := strings.ToLower(filepath.Base(path))
	ext := filepath.Ext(base)
	d := keelDialect
	if strings.HasPrefix(base, "ecosystem") {
		d = pm2Dialect
	}
	switch ext {
	case ".yaml", ".yml":
		return formatYAML, d
	case ".json":
		return formatJSON, d
	case ".toml":
		return formatTOML, d
	case ".js", ".cjs", ".mjs":
		stem := strings.TrimSuffix(base, ext)
		if strings.HasSuffix(stem, ".config") || strings.HasPrefix(base, "ecosystem") {
			return formatJS, pm2Dialect
		}
	}
	return formatNone, d
}

// IsConfigFile reports whether path names a config file rather than a
// script, by its name alone: *.yaml, *.yml, *.toml and *.json (a JSON file
// is never a script, so one without an apps list is a config file Load
// refuses with a clear message), and JavaScript named like pm2's ecosystem
// files: ecosystem*.js/.cjs/.mjs and *.config.js/.cjs/.mjs. Any other
// .js file is a script.
func IsConfigFile(path string) bool {
	f, _ := formatOf(path)
	return f != formatNone
}

// Load reads a config file and returns its apps, normalized and validated
// (spec.App.Normalize, Validate, and a check that each script and
// interpreter exists), with cwd resolved against the file's directory (and
// defaulting to it) and script, a pathy interpreter and watch paths
// resolved against the app's cwd, all absolute. Nothing is returned unless
// the whole file is good: the first problem, in file order, comes back as
// an *Error naming the file, the line (not for JavaScript) and the key; a
// file that cannot be read or evaluated gives an error naming the file.
// JavaScript files are evaluated with node (found in PATH), which must
// finish within 10 seconds.
func Load(path string) ([]*spec.App, error) {
	return LoadWith(path, LoadOptions{})
}

// LoadOptions tune LoadWith.
type LoadOptions struct {
	// Env names the env_<name> blocks to apply: each app's block of that
	// name is applied on top of its env (its keys win). A file in which
	// no app has that block is refused.
	Env string
}

// LoadWith is Load with options.
func LoadWith(path string, o LoadOptions) ([]*spec.App, error) {
	f, d := formatOf(path)
	if f == formatNone {
		return nil, &Error{File: path, Err: errors.New("not a config file: want .yaml, .yml, .toml, .json or ecosystem.config.js")}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	if f == formatJS {
		root, err := evalJS(abs, jsTimeout)
		if err != nil {
			var pe *posError
			if errors.As(err, &pe) {
				return nil, &Error{File: path, Line: pe.line, Err: pe.err}
			}
			return nil, &Error{File: path, Err: err}
		}
		return decodeFile(path, abs, root, d, o)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return loadData(path, abs, data, f, d, o)
}

// loadData is LoadWith for a file's contents already read: data in format
// f (not JavaScript), named path, at absolute path abs. The fuzz targets
// call it directly.
func loadData(path, abs string, data []byte, f format, d dialect, o LoadOptions) ([]*spec.App, error) {
	var (
		root *treeNode
		err  error
	)
	switch f {
	case formatYAML:
		root, err = parseYAML(data)
	case formatJSON:
		root, err = parseJSON(data)
	case formatTOML:
		root, err = parseTOML(data)
	}
	if err != nil {
		var pe *posError
		if errors.As(err, &pe) {
			return nil, &Error{File: path, Line: pe.line, Err: pe.err}
		}
		return nil, &Error{File: path, Err: err}
	}
	return decodeFile(path, abs, root, d, o)
}

// decodeFile turns a parsed file into apps: decoded, with the env_<name>
// block o.Env applied, normalized, validated and resolved.
func decodeFile(path, abs string, root *treeNode, d dialect, o LoadOptions) ([]*spec.App, error) {
	dec := &decoder{file: path, dialect: d}
	ads, err := dec.decodeRoot(root)
	if err != nil {
		return nil, err
	}
	if o.Env != "" {
		found := false
		for _, ad := range ads {
			set, ok := ad.envSets[o.Env]
			if !ok {
				continue
			}
			found = true
			for k, v := range set {
				setEnv(ad.app, k, v)
			}
		}
		if !found {
			return nil, &Error{File: path, Key: "env_" + o.Env, Err: fmt.Errorf("--env %s: no app has an env_%s block", o.Env, o.Env)}
		}
	}
	dir := filepath.Dir(abs)
	names := map[string]*appDecoder{}
	apps := make([]*spec.App, 0, len(ads))
	for _, ad := range ads {
		if err := ad.finish(dir); err != nil {
			return nil, err
		}
		if first, ok := names[ad.app.Name]; ok {
			where := ""
			if l := first.nameLine(); l > 0 {
				where = fmt.Sprintf(" (line %d)", l)
			}
			msg := fmt.Errorf("%q is already the name of apps[%d]%s; give each app its own name", ad.app.Name, first.index, where)
			return nil, ad.at("name", msg)
		}
		names[ad.app.Name] = ad
		apps = append(apps, ad.app)
	}
	return apps, nil
}

func (ad *appDecoder) nameLine() int {
	if s, ok := ad.src["name"]; ok {
		return s.line
	}
	return ad.line
}

// finish normalizes, validates and resolves one decoded app.
func (ad *appDecoder) finish(dir string) error {
	a := ad.app
	if a.Script == "" {
		return ad.at("script", errScriptRequired)
	}
	named := a.Name != ""
	a.Normalize()
	if field, err := resolve(a, dir); err != nil {
		return ad.at(field, err)
	}
	if err := validate(a, named); err != nil {
		var fe *spec.FieldError
		if errors.As(err, &fe) {
			return ad.at(fe.Field, fe.Err)
		}
		return ad.at("name", err)
	}
	return nil
}

// validate is a.Validate, saying so when a bad name came from the script.
func validate(a *spec.App, named bool) error {
	err := a.Validate()
	var fe *spec.FieldError
	if !named && errors.As(err, &fe) && fe.Field == "name" {
		return &spec.FieldError{Field: "name", Err: fmt.Errorf("%w; it comes from the script's name, so set name", fe.Err)}
	}
	return err
}

// errScriptRequired is checked before Validate, which would first complain
// that the name (taken from the script) is empty.
var errScriptRequired = errors.New("is required")

// Check normalizes and validates an app built from flags (Normalize,
// Validate) and resolves its paths: cwd against the process's working
// directory (and defaulting to it), script, a pathy interpreter and watch
// paths against cwd, all made absolute. A script that is a path must be a
// file (and executable when no interpreter runs it); a bare command name
// with no interpreter that is not a file in cwd is looked up in PATH and
// kept as written. A missing script is refused with an error such as
//
//	script: "./srv.js": no such file in /home/me/app
//
// The error is an *Error naming the flag (Key "--instances", or "script").
func Check(app *spec.App) error {
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("finding the working directory: %w", err)
	}
	if app.Script == "" {
		return &Error{Key: "script", Err: errScriptRequired}
	}
	named := app.Name != ""
	app.Normalize()
	if field, err := resolve(app, wd); err != nil {
		return &Error{Key: flagOf(field), Err: err}
	}
	if err := validate(app, named); err != nil {
		var fe *spec.FieldError
		if errors.As(err, &fe) {
			return &Error{Key: flagOf(fe.Field), Err: fe.Err}
		}
		return err
	}
	return nil
}

// flagOf names an option key as the user typed it on the command line.
func flagOf(key string) string {
	if key == "script" {
		return key
	}
	if o, ok := optionByKey(key); ok {
		return "--" + o.Flag
	}
	return "--" + strings.ReplaceAll(key, "_", "-")
}

// resolve makes a's paths absolute against base and checks that its cwd,
// script and interpreter exist. On error it returns the option key at fault.
func resolve(a *spec.App, base string) (string, error) {
	cwd := a.Cwd
	switch {
	case cwd == "":
		cwd = base
	case !filepath.IsAbs(cwd):
		cwd = filepath.Join(base, cwd)
	}
	cwd = filepath.Clean(cwd)
	if st, err := os.Stat(cwd); err != nil {
		return "cwd", fmt.Errorf("%q: no such directory", a.Cwd)
	} else if !st.IsDir() {
		return "cwd", fmt.Errorf("%q is not a directory", a.Cwd)
	}
	a.Cwd = cwd

	interp := interpreterOf(a)
	if interp != "" {
		p, err := findProgram(interp, cwd)
		if err != nil {
			return "interpreter", err
		}
		if a.Interpreter != "" && a.Interpreter != "none" {
			a.Interpreter = p
		}
	}

	script := a.Script
	if interp == "" && !strings.Contains(script, "/") {
		// A file in cwd, or else a command in PATH (npm, redis-server).
		p := filepath.Join(cwd, script)
		st, err := os.Stat(p)
		switch {
		case err == nil && st.IsDir():
			return "script", fmt.Errorf("%q is a directory, not a file", script)
		case err == nil:
			if st.Mode()&0o111 == 0 {
				return "script", fmt.Errorf("%q is not executable: chmod +x it, or set interpreter", script)
			}
			a.Script = p
		default:
			if _, err := exec.LookPath(script); err != nil {
				hint := ""
				if strings.ContainsAny(script, " \t") {
					hint = " (put its arguments in args)"
				}
				return "script", fmt.Errorf("%q: no such file in %s, and no command of that name in PATH%s", script, cwd, hint)
			}
		}
	} else {
		p := script
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			where := ""
			if !filepath.IsAbs(script) {
				where = " in " + cwd
			}
			return "script", fmt.Errorf("%q: no such file%s", script, where)
		case err != nil:
			cause := errors.Unwrap(err)
			if cause == nil {
				cause = err
			}
			return "script", fmt.Errorf("%q: %w", script, cause)
		case st.IsDir():
			return "script", fmt.Errorf("%q is a directory, not a file", script)
		case interp == "" && st.Mode()&0o111 == 0:
			return "script", fmt.Errorf("%q is not executable: chmod +x it, or set interpreter", script)
		}
		a.Script = filepath.Clean(p)
	}

	for i, w := range a.Watch {
		if !filepath.IsAbs(w) {
			a.Watch[i] = filepath.Join(cwd, w)
		}
	}
	return "", nil
}

// interpreterOf is the program that runs a's script, "" when it runs
// directly (the first of Argv when that is not the script).
func interpreterOf(a *spec.App) string {
	argv := a.Argv()
	if len(argv)-len(a.Args) > 1 {
		return argv[0]
	}
	return ""
}

// findProgram checks that an interpreter exists: a path (relative to cwd)
// must be an executable file, a bare name must be in PATH. It returns the
// name as it should be stored: absolute for a path, as written for a name.
func findProgram(prog, cwd string) (string, error) {
	if !strings.Contains(prog, "/") {
		if _, err := exec.LookPath(prog); err != nil {
			return "", fmt.Errorf("%q: no such command in PATH", prog)
		}
		return prog, nil
	}
	p := prog
	if !filepath.IsAbs(p) {
		p = filepath.Join(cwd, p)
	}
	st, err := os.Stat(p)
	switch {
	case err != nil:
		return "", fmt.Errorf("%q: no such file", prog)
	case st.IsDir() || st.Mode()&0o111 == 0:
		return "", fmt.Errorf("%q is not an executable file", prog)
	}
	return filepath.Clean(p), nil
}
