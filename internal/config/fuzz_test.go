package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// maxFuzzInput bounds a fuzz input: config files are small, and a bigger
// input only makes each run slower without reaching new code.
const maxFuzzInput = 64 << 10

// fuzzLoad loads data as the file name (in testdata, so that the scripts
// of the seeds exist and validation runs to the end) and checks the
// contract of Load: apps, or an *Error naming the file and a position.
// withLines is whether the format has lines, so whether a syntax error
// must carry one.
func fuzzLoad(t *testing.T, name string, data []byte, env string) {
	if len(data) > maxFuzzInput {
		t.Skip("input too big")
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	f, d := formatOf(name)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		apps, err := loadData(name, abs, data, f, d, LoadOptions{Env: env})
		done <- result{len(apps), err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("loading %q hangs", data)
	}
	if r.err == nil {
		if r.n == 0 {
			t.Fatalf("no apps and no error for %q", data)
		}
		return
	}
	var ce *Error
	if !errors.As(r.err, &ce) {
		t.Fatalf("error %v (%T) is not a *config.Error, for %q", r.err, r.err, data)
	}
	if ce.File != name {
		t.Fatalf("error %q names file %q, want %q", r.err, ce.File, name)
	}
	if ce.Line <= 0 && ce.Key == "" {
		t.Fatalf("error %q has no position, for %q", r.err, data)
	}
}

// fuzzSeeds adds the files of testdata named in files, as they are, with
// and without --env production.
func fuzzSeeds(f *testing.F, files ...string) {
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
		f.Add(b, "production")
	}
}

func FuzzLoadYAML(f *testing.F) {
	fuzzSeeds(f, "testdata/keel/keel.yaml")
	f.Fuzz(func(t *testing.T, data []byte, env string) {
		fuzzLoad(t, "testdata/keel/keel.yaml", data, env)
	})
}

func FuzzLoadJSON(f *testing.F) {
	fuzzSeeds(f, "testdata/keel/keel.json")
	f.Fuzz(func(t *testing.T, data []byte, env string) {
		fuzzLoad(t, "testdata/keel/keel.json", data, env)
	})
}

func FuzzLoadTOML(f *testing.F) {
	fuzzSeeds(f, "testdata/keel/keel.toml")
	f.Fuzz(func(t *testing.T, data []byte, env string) {
		fuzzLoad(t, "testdata/keel/keel.toml", data, env)
	})
}

// FuzzLoadEcosystem fuzzes pm2's ecosystem files in their JSON dialect
// (the JavaScript ones run node, whose output is JSON read the same way).
func FuzzLoadEcosystem(f *testing.F) {
	fuzzSeeds(f, "testdata/pm2/ecosystem.config.json")
	f.Fuzz(func(t *testing.T, data []byte, env string) {
		fuzzLoad(t, "testdata/pm2/ecosystem.config.json", data, env)
	})
}
