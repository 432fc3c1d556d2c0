package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/google/renameio/v2"

	"github.com/keel-run/keel/internal/spec"
)

// Dump is what `keel save` writes and `keel resurrect` reads: the apps
// that were running, as they were defined.
type Dump struct {
	Apps []*spec.App `json:"apps"`
}

// WriteDump replaces the dump file atomically (temp file, fsync, rename),
// so a crash mid-save leaves the previous dump intact.
func WriteDump(path string, d Dump) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("writing dump %s: %w", path, err)
	}
	if err := renameio.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing dump %s: %w", path, err)
	}
	return nil
}

// ReadDump reads a dump file. A missing file is an error that says to run
// keel save first.
func ReadDump(path string) (Dump, error) {
	var d Dump
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, fmt.Errorf("reading dump %s: nothing saved yet (run keel save first)", path)
	}
	if err != nil {
		return d, fmt.Errorf("reading dump %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("reading dump %s: %w", path, err)
	}
	for i, a := range d.Apps {
		if a == nil {
			return d, fmt.Errorf("reading dump %s: apps[%d] is empty", path, i)
		}
		a.Normalize()
		if err := a.Validate(); err != nil {
			return d, fmt.Errorf("reading dump %s: apps[%d]: %w", path, i, err)
		}
	}
	return d, nil
}
