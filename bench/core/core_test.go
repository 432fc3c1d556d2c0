package core

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStamp(t *testing.T) {
	s, err := ParseStamp([]byte("4242 1795657751295201459\n"))
	if err != nil || s.PID != 4242 || s.At.UnixNano() != 1795657751295201459 {
		t.Fatalf("got %+v, %v", s, err)
	}
	for _, bad := range []string{"", "4242", "x 1", "1 x", "0 5", "-1 5", "3 -5", "1 2 3"} {
		if s, err := ParseStamp([]byte(bad)); err == nil {
			t.Errorf("ParseStamp(%q) = %+v, want an error", bad, s)
		}
	}
}

func TestStamps(t *testing.T) {
	st, err := ListenStamps()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := net.Dial("udp4", st.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"7 100", "garbage", "8 200", "9 300"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	first, err := st.Next(ctx, 10*time.Second, nil)
	if err != nil || first.PID != 7 {
		t.Fatalf("first: %+v, %v", first, err)
	}
	nine, err := st.Next(ctx, 10*time.Second, func(s Stamp) bool { return s.PID == 9 })
	if err != nil || nine.At.UnixNano() != 300 {
		t.Fatalf("the stamp of 9: %+v, %v", nine, err)
	}
	if s, err := st.Next(ctx, 20*time.Millisecond, nil); err == nil {
		t.Errorf("got %+v after the last stamp, want a timeout", s)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.Next(cctx, time.Minute, nil); err != context.Canceled {
		t.Errorf("cancelled: got %v", err)
	}
}

func TestParseKeelList(t *testing.T) {
	out := `[{"app":"go","instance":0,"pid":11826,"status":"online","restarts":3,"uptime_ms":1026,
		"memory_bytes":3313664,"cpu_percent":0,"last_exit":null},
		{"app":"crash","instance":0,"pid":0,"status":"waiting","restarts":5,"last_exit":{"code":1,"signal":null,"at":"2026-11-26T01:49:11Z"},
		"reason":"exited with code 1 after 3ms; restarting in 3.2s (unstable run 6 of at most 15)"}]`
	ins, err := ParseKeelList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Instance{
		{App: "go", PID: 11826, Status: "online", Restarts: 3},
		{App: "crash", Status: "waiting", Restarts: 5, Reason: "exited with code 1 after 3ms; restarting in 3.2s (unstable run 6 of at most 15)"},
	}
	if len(ins) != len(want) || ins[0] != want[0] || ins[1] != want[1] {
		t.Errorf("got %+v", ins)
	}
	if _, err := ParseKeelList([]byte("error: no daemon")); err == nil {
		t.Error("no error for text")
	}
}

func TestParsePM2List(t *testing.T) {
	out := "\x1b[32m[PM2]\x1b[39m Spawning PM2 daemon\n" +
		`[{"pid":123,"name":"go","pm2_env":{"status":"online","restart_time":2,"env":{"A":"[b]"}},"pm_id":0,"monit":{"memory":1,"cpu":0}},` +
		`{"pid":0,"name":"crash","pm2_env":{"status":"errored","restart_time":15},"pm_id":1}]`
	ins, err := ParsePM2List([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 2 || ins[0] != (Instance{App: "go", PID: 123, Status: "online", Restarts: 2}) ||
		ins[1] != (Instance{App: "crash", Status: "errored", Restarts: 15}) {
		t.Errorf("got %+v", ins)
	}
}
