package sockets

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want Addr
		str  string
		name string
	}{
		{":3000", Addr{Network: TCP, Port: 3000}, ":3000", "tcp-3000"},
		{"127.0.0.1:3000", Addr{Network: TCP, Host: "127.0.0.1", Port: 3000}, "127.0.0.1:3000", "tcp-127.0.0.1-3000"},
		{"[::1]:3000", Addr{Network: TCP, Host: "::1", Port: 3000}, "[::1]:3000", "tcp-__1-3000"},
		{"[::]:80", Addr{Network: TCP, Host: "::", Port: 80}, "[::]:80", "tcp-__-80"},
		{"[0:0::1]:3000", Addr{Network: TCP, Host: "::1", Port: 3000}, "[::1]:3000", "tcp-__1-3000"},
		{"tcp://:8080", Addr{Network: TCP, Port: 8080}, ":8080", "tcp-8080"},
		{"tcp://127.0.0.1:8080", Addr{Network: TCP, Host: "127.0.0.1", Port: 8080}, "127.0.0.1:8080", "tcp-127.0.0.1-8080"},
		{"tcp://[::1]:8080", Addr{Network: TCP, Host: "::1", Port: 8080}, "[::1]:8080", "tcp-__1-8080"},
		{"localhost:3000", Addr{Network: TCP, Host: "localhost", Port: 3000}, "localhost:3000", "tcp-localhost-3000"},
		{":0", Addr{Network: TCP, Port: 0}, ":0", "tcp-0"},
		{"unix:///run/app.sock", Addr{Network: Unix, Path: "/run/app.sock"}, "unix:///run/app.sock", "unix-/run/app.sock"},
		{"unix:///run//x/../app.sock", Addr{Network: Unix, Path: "/run/app.sock"}, "unix:///run/app.sock", "unix-/run/app.sock"},
		{"unix:///tmp/a:b c.sock", Addr{Network: Unix, Path: "/tmp/a:b c.sock"}, "unix:///tmp/a:b c.sock", "unix-/tmp/a_b_c.sock"},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %#v, want %#v", c.in, got, c.want)
		}
		if s := got.String(); s != c.str {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, s, c.str)
		}
		if n := got.Name(); n != c.name {
			t.Errorf("Parse(%q).Name() = %q, want %q", c.in, n, c.name)
		}
		again, err := Parse(got.String())
		if err != nil || again != got {
			t.Errorf("Parse(%q) round trip = %#v, %v", got.String(), again, err)
		}
		if strings.Contains(got.Name(), ":") {
			t.Errorf("Name %q contains ':'", got.Name())
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"":                                    "not host:port",
		"3000":                                "not host:port",
		":http":                               "port must be a number",
		":65536":                              "port must be a number",
		":-1":                                 "port must be a number",
		":+80":                                "port must be a number",
		"::1:3000":                            "not host:port",
		"::1]:3000":                           "not host:port",
		"[127.0.0.1]:3000":                    "without brackets",
		"udp://:53":                           `unknown scheme "udp"`,
		"http://:80":                          `unknown scheme "http"`,
		"tcp://:80/x":                         "no path",
		"unix://":                             "absolute path",
		"unix://rel/app.sock":                 "absolute path",
		"unix:///" + strings.Repeat("a", 200): "at most 107",
		"bad host!:80":                        "neither an IP address nor a host name",
	}
	for in, want := range cases {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error containing %q", in, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) error %q does not contain %q", in, err, want)
		}
		if !strings.Contains(err.Error(), "unix:///abs/path") {
			t.Errorf("Parse(%q) error %q does not list the accepted forms", in, err)
		}
	}
}

func TestFDNames(t *testing.T) {
	a, _ := Parse(":3000")
	b, _ := Parse("unix:///tmp/x.sock")
	c, _ := Parse("[::1]:4000")
	if got, want := FDNames(a, b, c), "tcp-3000:unix-/tmp/x.sock:tcp-__1-4000"; got != want {
		t.Errorf("FDNames = %q, want %q", got, want)
	}
}

func TestMatchPort(t *testing.T) {
	var addrs []Addr
	for _, s := range []string{"unix:///tmp/x.sock", "127.0.0.1:3000", ":4000"} {
		a, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	for port, want := range map[int]int{3000: 1, 4000: 2, 5000: -1, 0: -1} {
		if got := MatchPort(addrs, port); got != want {
			t.Errorf("MatchPort(%d) = %d, want %d", port, got, want)
		}
	}
}

func TestTCPAddr(t *testing.T) {
	if got := TCPAddr("", 3000); got != (Addr{Network: TCP, Port: 3000}) {
		t.Errorf("TCPAddr(\"\", 3000) = %#v", got)
	}
	if got := TCPAddr("0:0::1", 3000); got.Host != "::1" {
		t.Errorf("TCPAddr normalises IPs: got %q", got.Host)
	}
}
