package core

import (
	"os"
	"testing"
	"time"
)

func ms(v ...float64) []time.Duration {
	var ds []time.Duration
	for _, f := range v {
		ds = append(ds, time.Duration(f*float64(time.Millisecond)))
	}
	return ds
}

func TestPercentile(t *testing.T) {
	cases := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, ms(7)[0]},
		{ms(7), 90, ms(7)[0]},
		{ms(1, 2, 3), 50, ms(2)[0]},
		{ms(1, 2, 3, 4), 50, ms(2.5)[0]},
		{ms(1, 2, 3, 4), 0, ms(1)[0]},
		{ms(1, 2, 3, 4), 100, ms(4)[0]},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), 90, ms(10)[0]},
		{ms(0, 10), 90, ms(9)[0]},
		{ms(1, 2), 150, ms(2)[0]},
		{ms(1, 2), -5, ms(1)[0]},
	}
	for _, c := range cases {
		if got := Percentile(c.in, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	in := ms(5, 1, 4, 2, 3)
	s := Summarize(in)
	want := Summary{N: 5, Min: ms(1)[0], Median: ms(3)[0], P90: ms(4.6)[0], Max: ms(5)[0]}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if in[0] != ms(5)[0] {
		t.Error("Summarize sorted its argument in place")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) is not zero")
	}
}

func TestMedianMem(t *testing.T) {
	m := func(rss int64) Mem { return Mem{RSS: rss, Anon: rss / 2, PSS: rss / 3} }
	med, lo, hi := MedianMem([]Mem{m(30), m(10), m(20)})
	if med != m(20) || lo != 10 || hi != 30 {
		t.Errorf("got %v %d %d", med, lo, hi)
	}
	if med, _, _ := MedianMem([]Mem{m(40), m(10), m(30), m(20)}); med != m(20) {
		t.Errorf("even count: got %v, want the lower middle", med)
	}
	if med, lo, hi := MedianMem(nil); med != (Mem{}) || lo != 0 || hi != 0 {
		t.Error("empty: not zero")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tkeel\nVmPeak:\t  1262340 kB\nVmHWM:\t   14000 kB\nVmRSS:\t   13408 kB\nRssAnon:\t    2080 kB\n"
	got, err := ParseVmRSS([]byte(status))
	if err != nil || got != 13408*1024 {
		t.Fatalf("got %d, %v; want %d", got, err, 13408*1024)
	}
	if got, err := ParseKB([]byte(status), "RssAnon"); err != nil || got != 2080*1024 {
		t.Errorf("RssAnon: got %d, %v", got, err)
	}
	rollup := "55d0c0a00000-7ffd6a5f4000 ---p 00000000 00:00 0 [rollup]\nRss:  13300 kB\nPss:   5652 kB\nPss_Anon: 2000 kB\n"
	if got, err := ParseKB([]byte(rollup), "Pss"); err != nil || got != 5652*1024 {
		t.Errorf("Pss: got %d, %v", got, err)
	}
	for _, bad := range []string{
		"Name:\tkthreadd\nState:\tS (sleeping)\n", // kernel threads have no VmRSS
		"VmRSS:\t12 MB\n",
		"VmRSS:\tlots kB\n",
		"VmRSS:\t-3 kB\n",
		"VmRSS:\n",
		"XVmRSS:\t12 kB\n",
		"",
	} {
		if v, err := ParseVmRSS([]byte(bad)); err == nil {
			t.Errorf("ParseVmRSS(%q) = %d, want an error", bad, v)
		}
	}
}

func TestReadMemSelf(t *testing.T) {
	m, err := ReadMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS < 1<<20 || m.RSS > 1<<34 || m.Anon <= 0 || m.Anon > m.RSS || m.PSS <= 0 || m.PSS > m.RSS {
		t.Errorf("own memory %+v is implausible", m)
	}
}

func TestHasEnv(t *testing.T) {
	env := []byte("PATH=/bin\x00KEEL_HOME=/tmp/a\x00X=1\x00")
	if !HasEnv(env, "KEEL_HOME=/tmp/a") {
		t.Error("entry not found")
	}
	for _, no := range []string{"KEEL_HOME=/tmp", "KEEL_HOME=/tmp/ab", "EEL_HOME=/tmp/a", ""} {
		if HasEnv(env, no) {
			t.Errorf("HasEnv(%q) is true", no)
		}
	}
}

func TestFormat(t *testing.T) {
	if got := MB(13408 * 1024); got != "13.1 MB" {
		t.Errorf("MB = %q", got)
	}
	if got := Ms(1234567 * time.Nanosecond); got != "1.23 ms" {
		t.Errorf("Ms = %q", got)
	}
}
