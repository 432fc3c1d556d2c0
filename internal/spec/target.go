package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// Target names what a command acts on: every app, one app, or one
// instance of an app.
type Target struct {
	App      string // "" means all apps
	Instance int    // -1 means every instance
}

// All is the target of every instance of every app.
var All = Target{Instance: -1}

// ParseTarget reads "all", "name" or "name:N".
func ParseTarget(s string) (Target, error) {
	if s == "all" {
		return All, nil
	}
	name, inst, found := strings.Cut(s, ":")
	if !ValidName(name) {
		return Target{}, fmt.Errorf("target %q: want an app name, name:N or all", s)
	}
	if !found {
		return Target{App: name, Instance: -1}, nil
	}
	n, err := strconv.Atoi(inst)
	if err != nil || n < 0 {
		return Target{}, fmt.Errorf("target %q: instance %q is not a number", s, inst)
	}
	return Target{App: name, Instance: n}, nil
}

// IsAll reports whether t names every app.
func (t Target) IsAll() bool { return t.App == "" }

func (t Target) String() string {
	switch {
	case t.App == "":
		return "all"
	case t.Instance < 0:
		return t.App
	}
	return t.App + ":" + strconv.Itoa(t.Instance)
}

// NotFoundError says a target names no app, instance or other thing that
// exists. The supervisor returns it, and the control server answers it
// with 404.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string { return e.What + " not found" }
