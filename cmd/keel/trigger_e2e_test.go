package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/keel-run/keel/internal/api"
)

// A change under a watched path restarts the app; the exit says why and
// describe counts the trigger.
func TestWatchRestarts(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	e.app("watched", "sleep", "--watch", dir)
	before := e.waitFor("online", allStatus("watched", 1, "online"))[0]
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	after := e.waitFor("restarted", func(l []api.Instance) bool {
		return len(l) == 1 && l[0].Status == "online" && l[0].Pid != before.Pid
	})[0]
	if after.Restarts != 1 || after.LastExit == nil || after.LastExit.Reason != "watch" {
		t.Fatalf("after a watched change: %+v (last exit %+v)", after, after.LastExit)
	}
	var det []api.AppDetail
	if err := jsonUnmarshal(e.ok("describe", "watched", "--json"), &det); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tr := range det[0].Triggers {
		if tr.Kind == "watch" && tr.Count == 1 && tr.LastFired != nil {
			found = true
		}
	}
	if !found {
		t.Fatalf("describe triggers: %+v", det[0].Triggers)
	}
}

// An instance over max_memory is restarted, and the exit is filed as a
// crash with its reason.
func TestMaxMemoryRestarts(t *testing.T) {
	e := newEnv(t)
	e.app("hog", "sleep", "--max-memory", "1M")
	l := e.waitFor("a max_memory restart", func(l []api.Instance) bool {
		return len(l) == 1 && l[0].LastExit != nil && l[0].LastExit.Reason == "max_memory"
	})
	if l[0].Restarts < 1 {
		t.Fatalf("restarts %d", l[0].Restarts)
	}
	var det []api.AppDetail
	if err := jsonUnmarshal(e.ok("describe", "hog", "--json"), &det); err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, x := range det[0].Exits {
		if x.Exit.Reason == "max_memory" {
			seen = true
		}
	}
	if !seen {
		t.Fatalf("exit history lacks max_memory: %+v", det[0].Exits)
	}
}
