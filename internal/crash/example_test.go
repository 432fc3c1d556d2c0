package crash_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keel-run/keel/internal/crash"
	"github.com/keel-run/keel/internal/spec"
)

const goTrace = `listening on :8080
panic: runtime error: index out of range [5] with length 3

goroutine 22 [running]:
main.lookup(...)
	/srv/app/main.go:13
main.worker(0x0?)
	/srv/app/main.go:18 +0x65
created by main.main in goroutine 1
	/srv/app/main.go:28 +0x525
`

func ExampleParse() {
	r := crash.Parse([]byte(goTrace), nil, spec.ExitCode(2, time.Now()))
	top, _ := r.TopFrame()
	fmt.Println(r.Kind)
	fmt.Println(r.Title)
	fmt.Println(top)
	fmt.Println("started by", r.CreatedBy.Function)
	// Output:
	// go-panic
	// panic: runtime error: index out of range [5] with length 3
	// main.lookup (/srv/app/main.go:13)
	// started by main.main
}

func ExampleBook() {
	book := crash.NewBook(crash.Limits{})
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	// The same crash in three runs: other goroutine ids, indexes, offsets.
	for i, variant := range []string{goTrace,
		strings.NewReplacer("goroutine 22", "goroutine 9", "[5]", "[7]", "+0x65", "+0x71").Replace(goTrace),
		strings.NewReplacer("goroutine 22", "goroutine 40", "/srv/app/", "/srv/app-v2/").Replace(goTrace),
	} {
		exit := spec.ExitCode(2, start.Add(time.Duration(i)*time.Minute))
		rep := crash.Parse([]byte(variant), nil, exit)
		g, isNew := book.Add("api", i%2, 1000+i, rep, exit)
		fmt.Println(g.ID == book.Groups("api")[0].ID, isNew, g.Count)
	}
	g, _ := book.Latest("api")
	out, _ := json.Marshal(struct {
		Count     int       `json:"count"`
		FirstSeen time.Time `json:"first_seen"`
		LastSeen  time.Time `json:"last_seen"`
		Exits     int       `json:"exits"`
	}{g.Count, g.FirstSeen, g.LastSeen, len(g.Exits)})
	fmt.Println(string(out))
	// Output:
	// true true 1
	// true false 2
	// true false 3
	// {"count":3,"first_seen":"2026-11-25T10:00:00Z","last_seen":"2026-11-25T10:02:00Z","exits":3}
}

func ExampleNotifier() {
	delivered := make(chan error, 1)
	n := crash.NewNotifier(crash.NotifierOptions{
		Done: func(d crash.Delivery) { delivered <- d.Err },
	})
	book := crash.NewBook(crash.Limits{})
	exit := spec.ExitCode(2, time.Now())
	g, isNew := book.Add("api", 0, 1234, crash.Parse([]byte(goTrace), nil, exit), exit)
	last := crash.ExitRecord{Instance: 0, Pid: 1234, Exit: exit}

	// on_crash is a command here (it gets the JSON on stdin); a URL works the same.
	fmt.Println(n.Notify("cat > /dev/null", g, isNew, last))
	fmt.Println(<-delivered)
	// The same group again, right away: held back.
	g, isNew = book.Add("api", 0, 1235, crash.Parse([]byte(goTrace), nil, exit), exit)
	fmt.Println(n.Notify("cat > /dev/null", g, isNew, last))
	n.Close()
	// Output:
	// true
	// <nil>
	// false
}
