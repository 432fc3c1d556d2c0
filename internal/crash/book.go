package crash

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keel-run/keel/internal/spec"
)

// Default bounds of a Book.
const (
	DefaultGroupsPerApp  = 50
	DefaultGroups        = 500
	DefaultExitsPerGroup = 20
	idHexLen             = 8 // hex digits of a group id
)

// Limits bound a Book. A zero field means its default.
type Limits struct {
	GroupsPerApp  int // groups kept per app; the one seen longest ago goes first
	Groups        int // groups kept in all
	ExitsPerGroup int // exits remembered per group, newest kept
	StackBytes    int // bytes of a group's LastStack (at most MaxText)
}

func (l Limits) withDefaults() Limits {
	if l.GroupsPerApp <= 0 {
		l.GroupsPerApp = DefaultGroupsPerApp
	}
	if l.Groups <= 0 {
		l.Groups = DefaultGroups
	}
	if l.ExitsPerGroup <= 0 {
		l.ExitsPerGroup = DefaultExitsPerGroup
	}
	if l.StackBytes <= 0 || l.StackBytes > MaxText {
		l.StackBytes = MaxText
	}
	return l
}

// ExitRecord is one exit a crash group covers. Its JSON matches
// api.ExitRecord.
type ExitRecord struct {
	Instance int       `json:"instance"`
	Pid      int       `json:"pid"`
	Exit     spec.Exit `json:"exit"`
}

// Group is one kind of crash of one app. The first eight fields are
// SPEC.md's `keel crashes --json` object; Kind and Exits are what
// `keel crash <id>` adds.
type Group struct {
	ID        string    `json:"id"`        // short hex, unique in the Book, stable for (app, signature)
	App       string    `json:"app"`       //
	Signature string    `json:"signature"` // Signature of its reports
	Title     string    `json:"title"`     // the latest report's title
	Count     int       `json:"count"`     // crashes seen, including evicted exits
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	LastStack string    `json:"last_stack"` // the latest report's Text
	Kind      Kind      `json:"kind"`
	// Exits are the latest exits the group covers, oldest first.
	Exits []ExitRecord `json:"exits"`
}

func (g Group) clone() Group {
	g.Exits = slices.Clone(g.Exits)
	return g
}

// Book is the set of crash groups, bounded by its Limits. The zero Book is
// ready to use with the default limits. Its JSON form (MarshalJSON,
// UnmarshalJSON) is what the daemon persists.
//
// A Book is not safe for concurrent use: keep it in one goroutine.
type Book struct {
	limits Limits
	byID   map[string]*Group
	bySig  map[string]*Group // key: app + "\x00" + signature
}

// NewBook returns an empty Book with the given limits.
func NewBook(l Limits) *Book {
	return &Book{limits: l.withDefaults()}
}

func (b *Book) init() {
	if b.byID == nil {
		b.byID = make(map[string]*Group)
		b.bySig = make(map[string]*Group)
		b.limits = b.limits.withDefaults()
	}
}

func sigKey(app, sig string) string { return app + "\x00" + sig }

// Add records one crash of app's instance (pid) described by rep, and
// returns its group (a copy) and whether the group is new. The time of the
// crash is exit.At, or now if that is zero. Adding may evict the group of
// the same app, or of any app, seen longest ago, to keep within the limits
// (never the group just added).
func (b *Book) Add(app string, instance, pid int, rep Report, exit spec.Exit) (Group, bool) {
	b.init()
	at := exit.At
	if at.IsZero() {
		at = time.Now()
	}
	sig := Signature(rep)
	g, ok := b.bySig[sigKey(app, sig)]
	if !ok {
		g = &Group{
			ID:        b.newID(app, sig),
			App:       app,
			Signature: sig,
			FirstSeen: at,
		}
		b.byID[g.ID] = g
		b.bySig[sigKey(app, sig)] = g
	}
	g.Count++
	if at.After(g.LastSeen) || !ok {
		g.LastSeen = at
	}
	if at.Before(g.FirstSeen) {
		g.FirstSeen = at
	}
	g.Title = rep.Title
	g.Kind = rep.Kind
	g.LastStack = cutText(rep.Text, b.limits.StackBytes)
	g.Exits = append(g.Exits, ExitRecord{Instance: instance, Pid: pid, Exit: exit})
	if n := len(g.Exits) - b.limits.ExitsPerGroup; n > 0 {
		g.Exits = slices.Delete(g.Exits, 0, n)
	}
	b.evict(app, g.ID)
	return g.clone(), !ok
}

// newID is the first idHexLen hex digits of a hash of (app, signature),
// lengthened in the unlikely case another group holds them.
func (b *Book) newID(app, sig string) string {
	sum := sha256.Sum256([]byte("keel-crash-group\x00" + sigKey(app, sig)))
	full := hex.EncodeToString(sum[:])
	for n := idHexLen; n < len(full); n += 4 {
		if _, taken := b.byID[full[:n]]; !taken {
			return full[:n]
		}
	}
	return full
}

// evict drops the groups seen longest ago while app has more than
// GroupsPerApp groups or the Book more than Groups, sparing keep.
func (b *Book) evict(app, keep string) {
	for {
		var victim *Group
		n := 0
		for _, g := range b.byID {
			if g.App != app {
				continue
			}
			n++
			if g.ID != keep && (victim == nil || older(g, victim)) {
				victim = g
			}
		}
		if n <= b.limits.GroupsPerApp || victim == nil {
			break
		}
		b.remove(victim)
	}
	for len(b.byID) > b.limits.Groups {
		var victim *Group
		for _, g := range b.byID {
			if g.ID != keep && (victim == nil || older(g, victim)) {
				victim = g
			}
		}
		if victim == nil {
			break
		}
		b.remove(victim)
	}
}

// older orders groups by last_seen, ties by id, so eviction is
// deterministic.
func older(a, b *Group) bool {
	if !a.LastSeen.Equal(b.LastSeen) {
		return a.LastSeen.Before(b.LastSeen)
	}
	return a.ID < b.ID
}

func (b *Book) remove(g *Group) {
	delete(b.byID, g.ID)
	delete(b.bySig, sigKey(g.App, g.Signature))
}

// Groups returns copies of app's groups ("" for every app's), the most
// recently seen first.
func (b *Book) Groups(app string) []Group {
	out := []Group{}
	for _, g := range b.byID {
		if app == "" || g.App == app {
			out = append(out, g.clone())
		}
	}
	slices.SortFunc(out, func(x, y Group) int {
		if c := y.LastSeen.Compare(x.LastSeen); c != 0 {
			return c
		}
		return cmp.Compare(x.ID, y.ID)
	})
	return out
}

// Latest returns app's most recently seen group ("" for any app's).
func (b *Book) Latest(app string) (Group, bool) {
	var best *Group
	for _, g := range b.byID {
		if (app == "" || g.App == app) && (best == nil || older(best, g)) {
			best = g
		}
	}
	if best == nil {
		return Group{}, false
	}
	return best.clone(), true
}

// Get returns the group with this id, or, as git does with commits, the
// only group whose id starts with it (at least 4 characters).
func (b *Book) Get(id string) (Group, bool) {
	id = strings.ToLower(strings.TrimSpace(id))
	if g, ok := b.byID[id]; ok {
		return g.clone(), true
	}
	if len(id) < 4 {
		return Group{}, false
	}
	var found *Group
	for gid, g := range b.byID {
		if strings.HasPrefix(gid, id) {
			if found != nil {
				return Group{}, false // ambiguous
			}
			found = g
		}
	}
	if found == nil {
		return Group{}, false
	}
	return found.clone(), true
}

// Forget drops every group of app (when the app is deleted) and returns
// how many there were.
func (b *Book) Forget(app string) int {
	n := 0
	for _, g := range b.byID {
		if g.App == app {
			b.remove(g)
			n++
		}
	}
	return n
}

// Len returns the number of groups.
func (b *Book) Len() int { return len(b.byID) }

// bookJSON is the persisted form. Version changes when the meaning of a
// signature does; groups from another version are dropped on load, since
// their signatures would never match again.
type bookJSON struct {
	Version int     `json:"version"`
	Groups  []Group `json:"groups"`
}

const bookVersion = 1

// MarshalJSON writes the groups, most recently seen first.
func (b Book) MarshalJSON() ([]byte, error) {
	return json.Marshal(bookJSON{Version: bookVersion, Groups: b.Groups("")})
}

// UnmarshalJSON replaces the Book's groups with those in data, keeping its
// limits, and enforces the limits on them: a Book written with larger
// limits loads bounded. Groups without id, app or signature are dropped; so
// are all groups of another version.
func (b *Book) UnmarshalJSON(data []byte) error {
	var in bookJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("reading crash book: %w", err)
	}
	b.byID, b.bySig = nil, nil
	b.init()
	if in.Version != bookVersion {
		return nil
	}
	// Oldest first, so that eviction while loading drops the oldest.
	slices.SortFunc(in.Groups, func(x, y Group) int {
		if c := x.LastSeen.Compare(y.LastSeen); c != 0 {
			return c
		}
		return cmp.Compare(x.ID, y.ID)
	})
	for _, g := range in.Groups {
		if g.ID == "" || g.App == "" || g.Signature == "" {
			continue
		}
		if old, dup := b.bySig[sigKey(g.App, g.Signature)]; dup {
			b.remove(old)
		}
		if old, dup := b.byID[g.ID]; dup {
			b.remove(old)
		}
		g := g.clone()
		if n := len(g.Exits) - b.limits.ExitsPerGroup; n > 0 {
			g.Exits = slices.Delete(g.Exits, 0, n)
		}
		g.LastStack = cutText(g.LastStack, b.limits.StackBytes)
		b.byID[g.ID] = &g
		b.bySig[sigKey(g.App, g.Signature)] = &g
		b.evict(g.App, g.ID)
	}
	return nil
}
