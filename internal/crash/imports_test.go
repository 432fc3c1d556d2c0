package crash

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package a leaf: the standard library and
// internal/spec only, and the network and processes only in the notifier.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			switch {
			case path == "github.com/keel-run/keel/internal/spec":
			case strings.Contains(first, "."):
				t.Errorf("%s imports %s: only the standard library and internal/spec are allowed", file, path)
			case (path == "net/http" || path == "os/exec") && file != "notify.go":
				t.Errorf("%s imports %s: only notify.go may", file, path)
			}
		}
	}
}
