package main

import (
	"flag"
	"io"
	"testing"
)

func TestPM2Flag(t *testing.T) {
	for _, c := range []struct {
		args []string
		on   bool
		path string
	}{
		{nil, false, ""},
		{[]string{"-pm2"}, true, ""},
		{[]string{"-pm2=/opt/pm2"}, true, "/opt/pm2"},
		{[]string{"-pm2=false"}, false, ""},
		{[]string{"-pm2=/opt/pm2", "-pm2"}, true, ""},
	} {
		var f pm2Flag
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Var(&f, "pm2", "")
		if err := fs.Parse(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if f.on != c.on || f.path != c.path {
			t.Errorf("%v: on %v path %q, want %v %q", c.args, f.on, f.path, c.on, c.path)
		}
	}
}
