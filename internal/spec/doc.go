// Package spec holds the definition of an app — what to run and how — as
// every part of keel sees it: the config loader produces it, the store
// persists it, the control protocol carries it and the supervisor runs it.
//
// It is a leaf package (standard library only). Its JSON form uses the
// snake_case option names of SPEC.md, and Duration and Size accept the same
// spellings a config file does, so a spec read back from the store or the
// wire is exactly the spec that was written.
package spec
