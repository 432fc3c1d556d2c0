package logs

import (
	"fmt"
	"strings"
	"testing"
)

// TestUntilReadLosesNothing: a writer with a tiny MaxSize and UntilRead,
// read by a follower that removes what it has read, loses no line to
// bursts many rotations long, and leaves at most one rotated file.
func TestUntilReadLosesNothing(t *testing.T) {
	home := t.TempDir()
	path := Path(home, "app", 0, Stdout)
	w, err := OpenWriter(path, Options{MaxSize: 200, Keep: 1, UntilRead: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var fl *follower
	var got []string
	next := 1
	for burst := 0; burst < 5; burst++ {
		var b strings.Builder
		for i := 0; i < 40; i++ { // about 1,800 bytes of records: 9 rotations' worth
			fmt.Fprintf(&b, "line %d\n", next)
			next++
		}
		if err := w.Capture(strings.NewReader(b.String())); err != nil {
			t.Fatal(err)
		}
		if files := logFiles(t, path); len(files) > 2 {
			t.Fatalf("burst %d left %d files: %v", burst, len(files), files)
		}
		if fl == nil {
			srcs, err := listSources(home, targetAll, false)
			if err != nil || len(srcs) != 1 {
				t.Fatalf("sources %v %v", srcs, err)
			}
			fl = newFollower(srcs[0])
			fl.removeRead = true
			defer fl.close()
		}
		if err := fl.poll(func(l line) { got = append(got, string(l.text)) }); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != next-1 {
		t.Fatalf("read %d lines of %d", len(got), next-1)
	}
	for i, l := range got {
		if l != fmt.Sprintf("line %d", i+1) {
			t.Fatalf("line %d reads %q", i+1, l)
		}
	}
}
