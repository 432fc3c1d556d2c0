package crash

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package a leaf: the standard library,
// internal/spec, internal/oneline and internal/http1 only, and the network and processes
// only in the notifier. net/http never: keel's binary does not link it.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	const http1 = "github.com/keel-run/keel/internal/http1"
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
			case path == "net/http":
				t.Errorf("%s imports net/http: use internal/http1, keel's binary links no net/http", file)
			case (path == http1 || path == "crypto/tls" || path == "os/exec") && file != "notify.go":
				t.Errorf("%s imports %s: only notify.go may", file, path)
			case path == "github.com/keel-run/keel/internal/spec", path == "github.com/keel-run/keel/internal/oneline", path == http1:
			case strings.Contains(first, "."):
				t.Errorf("%s imports %s: only the standard library, internal/spec, internal/oneline and internal/http1 are allowed", file, path)
			}
		}
	}
}
