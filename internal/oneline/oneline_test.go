package oneline_test

import (
	"fmt"
	"testing"

	"github.com/keel-run/keel/internal/oneline"
)

func TestFold(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 0, "plain"},
		{"  padded \n", 0, "padded"},
		{"first\nsecond\r\n\n  third  ", 0, "first; second; third"},
		{"tab\there  and\x1b[31mcolour\x7f", 0, "tab here and [31mcolour"},
		{"héllo wörld", 5, "héll…"},
		{"héllo", 5, "héllo"},
		{"", 3, ""},
		{"a\nb", 2, "a…"},
		{"bad \xff byte", 0, "bad \uFFFD byte"},
	} {
		if got := oneline.Fold(c.in, c.max); got != c.want {
			t.Errorf("Fold(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}

func ExampleFold() {
	fmt.Println(oneline.Fold("open config.yaml:\n  permission denied\n", 0))
	// Output: open config.yaml:; permission denied
}
