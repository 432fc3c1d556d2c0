package crash

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// rep is a report whose signature is fixed by word.
func rep(word string) Report {
	return Report{Kind: KindGoPanic, ErrorType: "panic", Message: "failed to " + word, Title: "panic: failed to " + word, Text: "panic: failed to " + word + "\n\ngoroutine 1 [running]:"}
}

func at(min int) spec.Exit { return spec.ExitCode(2, t0.Add(time.Duration(min)*time.Minute)) }

var idRE = regexp.MustCompile(`^[0-9a-f]{8}$`)

func TestBookGroups(t *testing.T) {
	var b Book // the zero Book works
	g1, isNew := b.Add("api", 0, 100, rep("connect"), at(0))
	if !isNew || g1.Count != 1 || g1.App != "api" || !idRE.MatchString(g1.ID) || g1.Signature != Signature(rep("connect")) ||
		g1.Title != "panic: failed to connect" || g1.Kind != KindGoPanic || !g1.FirstSeen.Equal(at(0).At) ||
		!g1.LastSeen.Equal(at(0).At) || g1.LastStack != rep("connect").Text || len(g1.Exits) != 1 || g1.Exits[0].Pid != 100 {
		t.Fatalf("first add: %+v new=%v", g1, isNew)
	}
	g2, isNew := b.Add("api", 1, 101, rep("connect"), at(5))
	if isNew || g2.ID != g1.ID || g2.Count != 2 || !g2.LastSeen.Equal(at(5).At) || !g2.FirstSeen.Equal(at(0).At) {
		t.Fatalf("repeat: %+v new=%v", g2, isNew)
	}
	// An exit reported late moves first_seen back, not last_seen.
	g3, _ := b.Add("api", 0, 99, rep("connect"), at(-3))
	if !g3.FirstSeen.Equal(at(-3).At) || !g3.LastSeen.Equal(at(5).At) || g3.Count != 3 {
		t.Fatalf("late exit: %+v", g3)
	}
	other, isNew := b.Add("api", 0, 102, rep("parse"), at(1))
	web, _ := b.Add("web", 0, 200, rep("connect"), at(2))
	if !isNew || other.ID == g1.ID || web.ID == g1.ID || web.Signature != g1.Signature {
		t.Fatalf("distinct groups: %s %s %s", g1.ID, other.ID, web.ID)
	}

	ids := func(gs []Group) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.ID)
		}
		return out
	}
	if got, want := ids(b.Groups("")), []string{g1.ID, web.ID, other.ID}; !slices.Equal(got, want) {
		t.Errorf("Groups(\"\") = %v, want %v (newest first)", got, want)
	}
	if got, want := ids(b.Groups("api")), []string{g1.ID, other.ID}; !slices.Equal(got, want) {
		t.Errorf("Groups(api) = %v, want %v", got, want)
	}
	if gs := b.Groups("none"); gs == nil || len(gs) != 0 {
		t.Errorf("Groups(none) = %#v, want empty", gs)
	}
	if g, ok := b.Latest("api"); !ok || g.ID != g1.ID {
		t.Errorf("Latest(api) = %s %v", g.ID, ok)
	}
	if g, ok := b.Latest("web"); !ok || g.ID != web.ID {
		t.Errorf("Latest(web) = %s %v", g.ID, ok)
	}
	if _, ok := b.Latest("none"); ok {
		t.Error("Latest(none) found a group")
	}
	if g, ok := b.Get(other.ID); !ok || g.ID != other.ID || g.Count != 1 {
		t.Errorf("Get(%s) = %+v %v", other.ID, g, ok)
	}
	if g, ok := b.Get(strings.ToUpper(other.ID[:6])); !ok || g.ID != other.ID {
		t.Errorf("Get by prefix = %+v %v", g, ok)
	}
	if _, ok := b.Get(other.ID[:3]); ok {
		t.Error("Get with a 3-character prefix found a group")
	}
	if _, ok := b.Get("zzzzzzzz"); ok {
		t.Error("Get of an unknown id found a group")
	}
	// Copies: changing what Groups returned changes nothing in the Book.
	gs := b.Groups("api")
	gs[0].Exits[0].Pid = -1
	gs[0].Count = 1000
	if g, _ := b.Get(g1.ID); g.Exits[0].Pid == -1 || g.Count == 1000 {
		t.Error("Groups returned the Book's own data")
	}
	// The id is a function of (app, signature): another Book agrees.
	b2 := NewBook(Limits{})
	if g, _ := b2.Add("api", 0, 1, rep("connect"), at(0)); g.ID != g1.ID {
		t.Errorf("id %s in another book, %s here", g.ID, g1.ID)
	}
	if n := b.Forget("api"); n != 2 || b.Len() != 1 {
		t.Errorf("Forget(api) = %d, %d left", n, b.Len())
	}
}

func TestBookBounds(t *testing.T) {
	b := NewBook(Limits{GroupsPerApp: 3, Groups: 5, ExitsPerGroup: 4, StackBytes: 1000})

	// Exits: the newest four stay; the count goes on.
	for i := range 10 {
		b.Add("api", i%3, 1000+i, rep("loop"), at(i))
	}
	g, _ := b.Latest("api")
	if g.Count != 10 || len(g.Exits) != 4 || g.Exits[0].Pid != 1006 || g.Exits[3].Pid != 1009 {
		t.Fatalf("exits of a 10-crash group: count %d, %+v", g.Count, g.Exits)
	}

	// The stack is cut.
	big := rep("overflow")
	big.Text = strings.Repeat("frame\n", 10000)
	g, _ = b.Add("api", 0, 1, big, at(20))
	if len(g.LastStack) > 1000 || !strings.Contains(g.LastStack, "bytes cut") {
		t.Fatalf("LastStack of %d bytes", len(g.LastStack))
	}

	// Per app: a fourth group evicts the one seen longest ago ("loop",
	// last at 9), unless it was seen again.
	b.Add("api", 0, 1, rep("parse"), at(21))
	b.Add("api", 0, 1, rep("loop"), at(22)) // "loop" is fresh again
	b.Add("api", 0, 1, rep("write"), at(23))
	var words []string
	for _, g := range b.Groups("api") {
		words = append(words, strings.TrimPrefix(g.Title, "panic: failed to "))
	}
	if want := []string{"write", "loop", "parse"}; !slices.Equal(words, want) {
		t.Fatalf("api groups %v, want %v", words, want)
	}

	// Overall: five groups at most, the oldest of any app evicted.
	b.Add("web", 0, 1, rep("a"), at(30))
	b.Add("web", 0, 1, rep("b"), at(31))
	b.Add("db", 0, 1, rep("c"), at(32))
	if b.Len() != 5 {
		t.Fatalf("%d groups, limit 5", b.Len())
	}
	if gs := b.Groups("api"); len(gs) != 2 || gs[1].Title != "panic: failed to loop" {
		t.Fatalf("after overall eviction, api has %+v", gs)
	}
	// A group just added is never the one evicted, even if its exit is old.
	g, isNew := b.Add("db", 0, 1, rep("ancient"), at(-100))
	if _, ok := b.Get(g.ID); !ok || !isNew || b.Len() != 5 {
		t.Fatalf("the group just added was evicted (%d groups)", b.Len())
	}
}

func TestBookJSON(t *testing.T) {
	b := NewBook(Limits{})
	b.Add("api", 0, 100, rep("connect"), at(0))
	b.Add("api", 1, 101, rep("connect"), spec.ExitSignal("SIGSEGV", at(1).At))
	b.Add("web", 0, 200, rep("parse"), at(2))

	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	// The shape: SPEC.md's keys for `keel crashes --json`, plus kind and exits.
	var raw struct {
		Version int              `json:"version"`
		Groups  []map[string]any `json:"groups"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw.Groups[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"app", "count", "exits", "first_seen", "id", "kind", "last_seen", "last_stack", "signature", "title"}
	if raw.Version != 1 || !slices.Equal(keys, want) {
		t.Fatalf("version %d, group keys %v, want %v", raw.Version, keys, want)
	}
	exit := raw.Groups[1]["exits"].([]any)[1].(map[string]any)
	if exit["instance"] != 1.0 || exit["pid"] != 101.0 || exit["exit"].(map[string]any)["signal"] != "SIGSEGV" {
		t.Fatalf("exit record %v", exit)
	}

	// Round trip, and a Book value marshals the same as a pointer.
	var back Book
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Groups(""), b.Groups("")) {
		t.Fatalf("round trip:\n%+v\n%+v", back.Groups(""), b.Groups(""))
	}
	if data2, _ := json.Marshal(back); string(data2) != string(data) {
		t.Fatalf("marshal after round trip differs:\n%s\n%s", data2, data)
	}
	// The loaded book goes on counting in the same groups.
	if g, isNew := back.Add("api", 0, 102, rep("connect"), at(3)); isNew || g.Count != 3 {
		t.Fatalf("add after load: %+v new=%v", g, isNew)
	}

	// Loading into smaller limits bounds what was saved.
	small := NewBook(Limits{GroupsPerApp: 1, ExitsPerGroup: 1, StackBytes: 10})
	if err := json.Unmarshal(data, small); err != nil {
		t.Fatal(err)
	}
	if gs := small.Groups("api"); small.Len() != 2 || len(gs) != 1 || len(gs[0].Exits) != 1 || len(gs[0].LastStack) > 10 {
		t.Fatalf("bounded load: %+v", small.Groups(""))
	}

	// Another version loads empty; bad JSON is an error; junk groups go.
	if err := json.Unmarshal([]byte(`{"version":99,"groups":[{"id":"a","app":"b","signature":"c"}]}`), &back); err != nil || back.Len() != 0 {
		t.Fatalf("other version: %v, %d groups", err, back.Len())
	}
	if err := json.Unmarshal([]byte(`{"version":`), &back); err == nil {
		t.Fatal("bad JSON accepted")
	}
	if err := json.Unmarshal([]byte(`{"version":1,"groups":[{"id":"","app":"b","signature":"c"},{"id":"x","app":"b","signature":"c"}]}`), &back); err != nil || back.Len() != 1 {
		t.Fatalf("junk groups: %v, %d groups", err, back.Len())
	}
}
