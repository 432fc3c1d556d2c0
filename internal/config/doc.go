// Package config turns config files into app specs and holds the table of
// app options that CLI flags and config keys share.
//
// # Formats
//
// Load reads keel's own files (keel.yaml / .yml, .json, .toml with a
// top-level apps list — [[apps]] in TOML) and pm2's ecosystem files
// (ecosystem.config.js / .cjs / .mjs, evaluated with node, and
// ecosystem*.json / .yaml). A file is read as a pm2 file when its name
// starts with "ecosystem" or it is JavaScript; pm2 files accept pm2's key
// names (exec_mode, wait_ready, listen_timeout, max_memory_restart, …) as
// well as keel's own. keel's files accept only keel's keys, and name the
// keel key when a pm2 one is used. JSON files may carry // and /* */
// comments and trailing commas, as pm2's do.
//
// Top-level keys starting with "x-" are left alone, as docker compose does,
// so that a YAML file can hold anchors of shared options:
//
//	x-defaults: &defaults
//	  kill_timeout: 10s
//	apps:
//	  - name: api
//	    script: server.js
//	    <<: *defaults
//
// # Errors
//
// A file is refused whole: Load returns either every app or an *Error. The
// error is one line naming the file, the line (when the format has lines:
// not for JavaScript) and the key:
//
//	keel.yaml:7: apps[1].instances: "lots" is not a number or "max"
//
// Unknown keys are refused, with a suggestion when one is close. Keys that
// set the same option twice (pm2's node_args next to interpreter_args) are
// refused, as are duplicate app names and pm2 keys keel cannot honour.
//
// # Paths
//
// An app's cwd is resolved against the config file's directory and defaults
// to it; script, a pathy interpreter and watch paths are resolved against
// the app's cwd. A script with no slash and no interpreter that is not a
// file in cwd is a command looked up in PATH (e.g. npm) and kept as written.
//
// # Values
//
// Durations are Go strings (500ms, 3s, 1m) or bare integers meaning
// milliseconds; sizes are 300M, 1G or bytes; list options take one value
// or a list; args given as one string is split as a shell would (quotes and
// backslashes, no expansion); env is a map whose scalar values (numbers,
// booleans) become strings; instances may be "max" (the CPU count); watch:
// true watches the app's cwd.
//
// # pm2 compatibility
//
// In pm2 files: instances 0 or "max" is the CPU count and -N is the CPU
// count minus N (at least 1); exec_mode cluster sets cluster; wait_ready:
// true is ready: message; listen_timeout is ready_timeout;
// max_memory_restart is max_memory; exp_backoff_restart_delay is
// restart_delay; autorestart: false is restart: never; ignore_watch is
// watch_ignore; node_args and exec_interpreter are interpreter_args and
// interpreter; cron is cron_restart; port sets env PORT. Defaults are
// keel's (SPEC.md), not pm2's: the stop signal is SIGTERM, where pm2 sends
// SIGINT, unless kill_signal says otherwise. Keys that only shape pm2's own logs, pid files and monitoring are
// accepted and ignored (see IgnoredPM2Keys); keys keel cannot honour (uid,
// gid, increment_var, shutdown_with_message, treekill: false, …) are refused.
package config
