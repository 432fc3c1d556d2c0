package spec

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"500ms": 500 * time.Millisecond, "3s": 3 * time.Second, "1500": 1500 * time.Millisecond, " 1m ": time.Minute} {
		got, err := ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "-3s", "soon", "99999999999999999"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"300M": 300 << 20, "1G": 1 << 30, "64k": 64 << 10, "10MB": 10 << 20, "1048576": 1 << 20} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "B", "-1M", "lots", "9999999999T", "NaN"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	a := &App{Name: "w", Script: "/w", KillTimeout: Duration(3 * time.Second), MaxMemory: 300 << 20}
	a.Normalize()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back App
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.KillTimeout != a.KillTimeout || back.MaxMemory != a.MaxMemory || back.ReadyTimeout != DefaultReadyTimeout {
		t.Fatalf("round trip: %+v", back)
	}
	// pm2 writes durations as bare milliseconds.
	if err := json.Unmarshal([]byte(`{"kill_timeout": 1600, "max_memory": "1G"}`), &back); err != nil || back.KillTimeout.D() != 1600*time.Millisecond || back.MaxMemory != 1<<30 {
		t.Fatalf("pm2 forms: %v %+v", err, back)
	}
}

func TestTargets(t *testing.T) {
	for in, want := range map[string]Target{"all": All, "web": {App: "web", Instance: -1}, "web:2": {App: "web", Instance: 2}} {
		got, err := ParseTarget(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseTarget(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "web:x", "web:-1", "a b", ":3"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) succeeded", bad)
		}
	}
}

func TestNormalizeValidate(t *testing.T) {
	a := &App{Script: "/srv/server.js", Instances: 2}
	a.Normalize()
	if a.Name != "server" || a.Ready != ReadyListen || a.Restart != RestartAlways || a.KillSignal != "SIGTERM" {
		t.Fatalf("normalized %+v", a)
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if argv := a.Argv(); len(argv) != 2 || argv[0] != "node" {
		t.Fatalf("argv %v", argv)
	}
	a.Restart = "sometimes"
	err := a.Validate()
	var fe *FieldError
	if err == nil || !asField(err, &fe) || fe.Field != "restart" {
		t.Fatalf("validate: %v", err)
	}
}

func asField(err error, fe **FieldError) bool {
	f, ok := err.(*FieldError)
	*fe = f
	return ok
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"web", "a", "web-1", "api.v2", "A_b", "9lives"} {
		if !ValidName(ok) {
			t.Errorf("ValidName(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "all", "-web", ".x", "_x", "a b", "a/b", "a:1", "é", string(make([]byte, 65))} {
		if ValidName(bad) {
			t.Errorf("ValidName(%q) = true", bad)
		}
	}
}
