package logs_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/keel-run/keel/internal/logs"
	"github.com/keel-run/keel/internal/spec"
)

func ExamplePath() {
	fmt.Println(logs.Path("/home/me/.keel", "api-v2", 3, logs.Stderr))
	// Output: /home/me/.keel/logs/api-v2-3-err.log
}

// A keeper captures an app's output (here a string stands in for the
// app's stdout pipe); `keel logs` prints it.
func ExamplePrint() {
	home, err := os.MkdirTemp("", "keel-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(home)

	w, err := logs.OpenWriter(logs.Path(home, "api", 0, logs.Stdout), logs.Options{
		MaxSize: 10 << 20,
		Keep:    5,
		Now:     func() time.Time { return time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		panic(err)
	}
	w.Capture(strings.NewReader("listening on :3000\nready\n"))
	w.Close()

	ctx := context.Background()
	logs.Print(ctx, os.Stdout, logs.PrintOptions{Home: home, Target: spec.All})
	logs.Print(ctx, os.Stdout, logs.PrintOptions{Home: home, Target: spec.All, Lines: 1, JSON: true})
	// Output:
	// api:0 | listening on :3000
	// api:0 | ready
	// {"app":"api","instance":0,"stream":"out","time":"2026-11-25T10:00:00Z","line":"ready"}
}
