// Package archtest holds no code: its test keeps keel's import rules true
// (docs/ARCHITECTURE.md): the supervisor core knows nothing of the CLI, the
// control transport or HTTP; leaf packages use only the standard library,
// golang.org/x/sys and the packages named for them; the public library
// depends on nothing beyond the standard library and golang.org/x; and
// the keel binary links no net/http.
package archtest
