package config

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// TestMain appends to PATH a directory of stand-in node and python3
// programs, so that apps of .js and .py scripts pass the interpreter check
// on machines without them (a real one earlier in PATH still wins, which
// the JavaScript tests need).
func TestMain(m *testing.M) {
	stubs, err := os.MkdirTemp("", "keel-config-test-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, name := range []string{"node", "python3"} {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Setenv("PATH", os.Getenv("PATH")+string(os.PathListSeparator)+stubs)
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(stubs) }))
}
