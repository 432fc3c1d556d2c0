package store

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/spec"
	"github.com/keel-run/keel/internal/supervisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAppsRoundTripAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &spec.App{Name: "web", Script: "/srv/web.js", Instances: 2, Listen: []string{":3000"}, Env: map[string]string{"A": "1"}}
	a.Normalize()
	code := 3
	rec := supervisor.AppRecord{Spec: a, Instances: []supervisor.InstanceRecord{
		{Instance: 0, Restarts: 7, LastExit: &spec.Exit{Code: &code, At: time.Unix(100, 0).UTC(), Reason: "stop"}},
		{Instance: 1, Stopped: true},
	}}
	if err := s.SaveApp(rec); err != nil {
		t.Fatal(err)
	}
	b := &spec.App{Name: "gone", Script: "/bin/true"}
	b.Normalize()
	if err := s.SaveApp(supervisor.AppRecord{Spec: b}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteApp("gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.LoadApps()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Spec.Name != "web" {
		t.Fatalf("apps %+v", got)
	}
	g := got[0]
	if g.Spec.KillTimeout != spec.DefaultKillTimeout || g.Spec.Env["A"] != "1" || g.Spec.Listen[0] != ":3000" {
		t.Fatalf("spec %+v", g.Spec)
	}
	if g.Instances[0].Restarts != 7 || *g.Instances[0].LastExit.Code != 3 || g.Instances[0].LastExit.Reason != "stop" || !g.Instances[1].Stopped {
		t.Fatalf("instances %+v", g.Instances)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's flock is per open file description, so a second Open in the
	// same process contends like a second daemon would.
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "another keel daemon") {
		t.Fatalf("second open: %v", err)
	}
}

func TestBlobs(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v map[string]int
	if ok, err := s.GetBlob("x", &v); ok || err != nil {
		t.Fatalf("missing blob: %v %v", ok, err)
	}
	if err := s.PutBlob("x", map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.GetBlob("x", &v); !ok || err != nil || v["a"] != 1 {
		t.Fatalf("blob %v %v %v", ok, err, v)
	}
}

func TestDump(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dump.json")
	if _, err := ReadDump(path); err == nil || !strings.Contains(err.Error(), "keel save") {
		t.Fatalf("missing dump: %v", err)
	}
	a := &spec.App{Name: "w", Script: "/bin/w", Instances: 3}
	a.Normalize()
	if err := WriteDump(path, Dump{Apps: []*spec.App{a}}); err != nil {
		t.Fatal(err)
	}
	d, err := ReadDump(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Apps) != 1 || d.Apps[0].Instances != 3 || d.Apps[0].Name != "w" {
		t.Fatalf("dump %+v", d.Apps)
	}
}
