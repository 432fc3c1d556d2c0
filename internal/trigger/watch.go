package trigger

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/keel-run/keel/internal/spec"
)

// defaultIgnore returns the base names (globs) whose changes never count:
// package and VCS directories, and the swap, backup and lock files editors
// write while a file is open (vim writes its swap file every few seconds
// of typing, which must not restart the app).
func defaultIgnore() []string {
	return []string{"node_modules", ".git", "*.swp", "*.swx", "*~", ".#*", "#*#", "4913"}
}

// maxBurstPaths bounds the distinct paths one burst remembers.
const maxBurstPaths = 10000

// watch is the watch trigger.
type watch struct {
	base     string // absolute; relative watch paths and details are against it
	roots    []root
	ignore   []string // defaultIgnore, then watch_ignore cleaned
	fsw      *fsnotify.Watcher
	debounce time.Duration
	log      *slog.Logger
	paths    []string // as the app gave them, for describe
	user     []string // watch_ignore as given, for describe
}

// root is one watched path.
type root struct {
	path string // absolute, clean
	file bool   // a file, watched through its directory
}

func newWatch(cfg Config) (*watch, error) {
	app := cfg.App
	base := app.Cwd
	if base == "" {
		base = "."
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return nil, &spec.FieldError{Field: "cwd", Err: err}
	}
	w := &watch{
		base:     base,
		ignore:   defaultIgnore(),
		debounce: cfg.Debounce,
		log:      cfg.Logger,
		paths:    app.Watch,
		user:     app.WatchIgnore,
	}
	for _, pat := range app.WatchIgnore {
		pat = strings.TrimSuffix(strings.TrimPrefix(filepath.ToSlash(pat), "./"), "/")
		if _, err := filepath.Match(pat, ""); err != nil || pat == "" {
			return nil, &spec.FieldError{Field: "watch_ignore", Err: fmt.Errorf("%q is not a valid glob pattern", pat)}
		}
		w.ignore = append(w.ignore, pat)
	}
	for _, p := range app.Watch {
		if !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		p = filepath.Clean(p)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, &spec.FieldError{Field: "watch", Err: err}
		}
		w.roots = append(w.roots, root{path: p, file: !fi.IsDir()})
	}
	w.fsw, err = fsnotify.NewWatcher()
	if err != nil {
		return nil, &spec.FieldError{Field: "watch", Err: watchErr(err)}
	}
	for _, r := range w.roots {
		if r.file {
			err = w.fsw.Add(filepath.Dir(r.path))
		} else {
			err = w.addTree(r.path, true)
		}
		if err != nil {
			w.fsw.Close()
			return nil, &spec.FieldError{Field: "watch", Err: watchErr(err)}
		}
	}
	return w, nil
}

// watchErr explains the limits a user can raise.
func watchErr(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w (too many watched directories: raise fs.inotify.max_user_watches, or watch fewer paths)", err)
	case errors.Is(err, syscall.EMFILE):
		return fmt.Errorf("%w (too many inotify instances: raise fs.inotify.max_user_instances)", err)
	}
	return err
}

// addTree watches dir and every directory below it that is not ignored.
// With strict, the first error is returned; otherwise (a directory that
// appeared while running, and may vanish as fast) errors are logged.
func (w *watch) addTree(dir string, strict bool) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if strict {
				return err
			}
			w.log.Debug("watch: skipping", "path", path, "err", err)
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if path != dir {
			if _, ok := w.match(path); !ok {
				return filepath.SkipDir
			}
		}
		if err := w.fsw.Add(path); err != nil {
			if strict {
				return fmt.Errorf("watching %s: %w", path, err)
			}
			w.log.Warn("watch: cannot watch new directory", "path", path, "err", watchErr(err))
			return filepath.SkipDir
		}
		return nil
	})
}

// match reports whether a change at name counts, and how to show it: name
// must be a watched file, or lie under a watched directory with no ignored
// component between.
func (w *watch) match(name string) (display string, ok bool) {
	for _, r := range w.roots {
		if r.file {
			if name == r.path {
				return w.display(name), true
			}
			continue
		}
		rel, err := filepath.Rel(r.path, name)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue
		}
		if rel == "." || !w.ignored(r.path, rel) {
			return w.display(name), true
		}
	}
	return "", false
}

// ignored reports whether any component of rel (a path under the watched
// directory dir) is ignored. A pattern without '/' is matched against each
// component's name; one with '/' against each leading part of the path,
// relative to dir, relative to the app's cwd, and absolute.
func (w *watch) ignored(dir, rel string) bool {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	for i, part := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		abs := filepath.Join(dir, prefix)
		fromBase, err := filepath.Rel(w.base, abs)
		if err != nil || strings.HasPrefix(fromBase, "..") {
			fromBase = ""
		}
		fromBase = filepath.ToSlash(fromBase)
		for _, pat := range w.ignore {
			if !strings.Contains(pat, "/") {
				if ok, _ := filepath.Match(pat, part); ok {
					return true
				}
				continue
			}
			for _, cand := range []string{prefix, fromBase, filepath.ToSlash(abs)} {
				if ok, _ := filepath.Match(pat, cand); ok && cand != "" {
					return true
				}
			}
		}
	}
	return false
}

// display is name relative to the app's cwd when it is under it.
func (w *watch) display(name string) string {
	if rel, err := filepath.Rel(w.base, name); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return name
}

func (w *watch) describe() string {
	return strings.Join(w.paths, ", ") + " (ignoring " + strings.Join(append([]string{"node_modules", ".git"}, w.user...), ", ") + ")"
}

// run turns events into debounced restarts until ctx is done, then closes
// the watcher.
func (w *watch) run(ctx context.Context, fire func(Restart)) {
	defer w.fsw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop() // armed by the first change of a burst

	var (
		pending bool
		first   string
		began   time.Time
		paths   = make(map[string]bool)
	)
	note := func(display string) {
		if !pending {
			pending, first, began = true, display, time.Now()
		}
		if len(paths) < maxBurstPaths {
			paths[display] = true
		}
		wait := w.debounce
		if rest := 10*w.debounce - time.Since(began); rest < wait {
			wait = max(rest, 0)
		}
		timer.Reset(wait)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			if ev.Op&^fsnotify.Chmod == 0 {
				continue // attributes only: indexers and backup tools do this
			}
			display, ok := w.match(ev.Name)
			if !ok {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					w.addTree(ev.Name, false)
				}
			}
			note(display)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				note("(more changes than the kernel queued)")
				continue
			}
			w.log.Warn("watch: error", "err", err)
		case <-timer.C:
			detail := "changed: " + first
			if n := len(paths) - 1; n > 0 {
				detail += " (+" + strconv.Itoa(n) + " more)"
			}
			pending = false
			clear(paths)
			fire(Restart{Instance: AllInstances, Reason: ReasonWatch, Detail: detail})
		}
	}
}
