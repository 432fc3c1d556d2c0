package nodeipc

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed preload.cjs
var preload []byte

// Preload is the preload script's source (a copy).
func Preload() []byte { return bytes.Clone(preload) }

// PreloadName is the file name PreloadPath gives the script:
// "keel-preload-<first 16 hex digits of its SHA-256>.cjs". A new keel
// version with a changed script gets a new name, so a running app's file is
// never rewritten under it. The .cjs extension keeps it CommonJS inside a
// "type": "module" package.
func PreloadName() string {
	sum := sha256.Sum256(preload)
	return "keel-preload-" + hex.EncodeToString(sum[:8]) + ".cjs"
}

// PreloadPath writes the preload script into dir (which must exist) unless
// it is there already with the right content, and returns its path, for
// `node --require <path> app.js`. It is safe to call concurrently, also from
// several processes: the file is written to a temporary name and renamed
// into place, so a reader never sees a partial script.
func PreloadPath(dir string) (string, error) {
	path := filepath.Join(dir, PreloadName())
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, preload) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, ".keel-preload-*")
	if err != nil {
		return "", fmt.Errorf("writing node preload: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(preload); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing node preload: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing node preload: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing node preload: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("writing node preload: %w", err)
	}
	return path, nil
}
