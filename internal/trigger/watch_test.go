package trigger

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renameOver writes content the way editors and atomic writers do: into a
// new file elsewhere, then renamed over path.
func renameOver(t *testing.T, tmpDir, path, content string) {
	t.Helper()
	tmp := filepath.Join(tmpDir, "new-"+filepath.Base(path))
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startWatch(t *testing.T, app *spec.App) (*recorder, *Set) {
	t.Helper()
	rec := newRecorder()
	set, err := Start(context.Background(), Config{App: app, Restart: rec.restart, Debounce: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Stop)
	return rec, set
}

// Each step ends with the restart it caused, and the detail names the
// first change of the burst: so a stray restart (a burst split in two) or
// an ignored change that counted shows up as the wrong detail at the next
// step.
func TestWatchDirectory(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "src/a.js"), "1")
	write(t, filepath.Join(dir, "node_modules/dep/index.js"), "1")
	write(t, filepath.Join(dir, ".git/HEAD"), "ref")
	rec, set := startWatch(t, &spec.App{Name: "w", Cwd: dir, Watch: []string{"."}, WatchIgnore: []string{"*.log"}})
	want := func(detail string) {
		t.Helper()
		if r := rec.next(t); r != (Restart{Instance: AllInstances, Reason: ReasonWatch, Detail: detail}) {
			t.Fatalf("restart %+v, want detail %q", r, detail)
		}
	}

	// A burst of writes to one file: one restart.
	for i := range 5 {
		write(t, filepath.Join(dir, "src/a.js"), strings.Repeat("x", i))
	}
	want("changed: src/a.js")

	// Several files in one burst: one restart that counts them.
	write(t, filepath.Join(dir, "src/b.js"), "1")
	write(t, filepath.Join(dir, "src/c.js"), "1")
	write(t, filepath.Join(dir, "src/a.js"), "2")
	want("changed: src/b.js (+2 more)")

	// A new subdirectory tree: its creation counts, and it is watched from
	// then on.
	write(t, filepath.Join(dir, "src/new/deeper/d.js"), "1")
	if r := rec.next(t); r.Reason != ReasonWatch || !strings.HasPrefix(r.Detail, "changed: src/new") {
		t.Fatalf("restart %+v, want changed: src/new…", r)
	}
	write(t, filepath.Join(dir, "src/new/deeper/d.js"), "2")
	want("changed: src/new/deeper/d.js")

	// An editor's rename-over write, from outside the tree.
	renameOver(t, elsewhere, filepath.Join(dir, "src/a.js"), "3")
	want("changed: src/a.js")

	// Ignored: node_modules (also new ones), .git, watch_ignore, an editor
	// swap file, and attribute changes. Then one real change, which must
	// be the whole next burst.
	write(t, filepath.Join(dir, "node_modules/dep/index.js"), "2")
	write(t, filepath.Join(dir, "src/node_modules/other/x.js"), "1")
	write(t, filepath.Join(dir, ".git/HEAD"), "ref2")
	write(t, filepath.Join(dir, "server.log"), "line")
	write(t, filepath.Join(dir, "src/.a.js.swp"), "swap")
	if err := os.Chmod(filepath.Join(dir, "src/a.js"), 0o600); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "src/sentinel.js"), "1")
	want("changed: src/sentinel.js")

	info := set.Info()
	if len(info) != 1 || info[0].Kind != ReasonWatch || info[0].Count != 6 || info[0].Detail != ". (ignoring node_modules, .git, *.log)" {
		t.Errorf("Info = %+v", info)
	}
}

func TestWatchFile(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	write(t, cfg, "{}")
	rec, _ := startWatch(t, &spec.App{Name: "f", Cwd: dir, Watch: []string{"config.json"}})

	// Its neighbours do not count; the file replaced by rename does, and so
	// does a later write to the new file.
	write(t, filepath.Join(dir, "other.json"), "{}")
	renameOver(t, elsewhere, cfg, `{"a":1}`)
	if r := rec.next(t); r.Detail != "changed: config.json" {
		t.Fatalf("restart %+v, want changed: config.json", r)
	}
	write(t, filepath.Join(dir, "other.json"), "{1}")
	write(t, cfg, `{"a":2}`)
	if r := rec.next(t); r.Detail != "changed: config.json" {
		t.Fatalf("restart %+v, want changed: config.json", r)
	}
	// Rename-over from a temporary file in the same directory, as many
	// editors and atomic writers do.
	renameOver(t, dir, cfg, `{"a":3}`)
	if r := rec.next(t); r.Detail != "changed: config.json" {
		t.Fatalf("restart %+v, want changed: config.json", r)
	}
}

func TestWatchAbsolutePathOutsideCwd(t *testing.T) {
	cwd, other := t.TempDir(), t.TempDir()
	rec, _ := startWatch(t, &spec.App{Name: "a", Cwd: cwd, Watch: []string{other}})
	write(t, filepath.Join(other, "x.txt"), "1")
	if r := rec.next(t); r.Detail != "changed: "+filepath.Join(other, "x.txt") {
		t.Fatalf("restart %+v", r)
	}
}
