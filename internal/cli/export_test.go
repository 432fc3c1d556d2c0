package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestExportKubernetes(t *testing.T) {
	e := newEnv(t)
	cfg := filepath.Join("..", "..", "examples", "node-http", "keel.yaml")
	code, out, errs := e.run("export", "kubernetes", cfg, "--image", "img:1", "--namespace", "web")
	require.Equal(t, ExitOK, code, errs)
	require.True(t, strings.HasPrefix(out, "apiVersion: v1\nkind: ConfigMap\n"), out)
	require.Contains(t, out, "image: img:1\n")
	require.Contains(t, out, "namespace: web\n")
	require.Contains(t, errs, "keel: note: app hello: listen 127.0.0.1:3000 became :3000")
	require.Empty(t, e.calls(), "export needs no daemon")

	code, _, errs = e.run("export", "kubernetes", cfg, "--name", "Bad_Name")
	require.Equal(t, ExitFailure, code)
	require.Equal(t, 1, strings.Count(errs, "\n"), errs)
	code, _, errs = e.run("export", "nomad", cfg)
	require.Equal(t, ExitUsage, code, errs)
	require.Contains(t, errs, `unknown target "nomad"`)
	code, _, _ = e.run("export", "kubernetes")
	require.Equal(t, ExitUsage, code)
}
