// Package crash turns what a dying process wrote into a crash report,
// groups reports of the same crash together, and tells someone about new
// ones.
//
// The flow, as the daemon drives it when an instance exits abnormally:
//
//	rep := crash.Parse(stderrTail, stdoutTail, exit)  // what crashed
//	g, isNew := book.Add(app, instance, pid, rep, exit) // which group
//	notifier.Notify(spec.OnCrash, g, isNew, crash.ExitRecord{...})
//
// # Parsing
//
// Parse reads the raw tail of an instance's stderr and stdout (the bytes
// the app wrote, without keel's timestamps) and recognises, newest crash
// first: Go panics and fatal errors with their goroutine traces (the
// crashing goroutine's frames, and the function that started it), Node
// uncaught exceptions and unhandled promise rejections, Python tracebacks
// (chained ones included), fatal signals with no text, and, when nothing
// else fits, a plain non-zero exit titled by the last line of stderr.
// stderr is preferred; stdout is the fallback. A trace followed by more
// than a few lines of other output is taken as something the app logged
// and survived, or as an earlier run's, not as the crash. The daemon
// should pass only what the exited run wrote, when it can tell.
//
// Parse never fails and its work is linear in its input: it looks at most
// at the last MaxInput bytes of each stream, scans lines without
// backtracking, and tries only a bounded number of candidate traces. The
// cut crash text in Report.Text is at most MaxText bytes.
//
// # Grouping
//
// Signature hashes what identifies a crash and leaves out what varies from
// one run to the next: the kind, the error type, the shape of the first
// line of the message (numbers, hex addresses, UUIDs, random ids and
// absolute paths are replaced by placeholders), and the top frames of the
// crashing stack — function and file base name, skipping runtime and
// node:internal frames and preferring the app's own frames (Sentry's
// "in-app" rule), with the line number of the top frame only. Columns,
// program counters, goroutine ids, pids, timestamps, ports and temp dirs
// do not reach the hash. So the same crash across restarts and instances
// is one group, while a different message shape, error type or top frame
// is another.
//
// A Book holds the groups, bounded per app and overall (the group seen
// longest ago is evicted first), each with a bounded list of the exits it
// covered and its latest crash text. It is JSON-serialisable so the daemon
// can persist it. A Book is not safe for concurrent use: the daemon keeps
// it in one goroutine.
//
// # Notifying
//
// A Notifier runs an app's on_crash hook — a shell command fed the crash
// as JSON on stdin, or an http(s) URL the same JSON is POSTed to — once per
// new group, at most once per RepeatInterval for repeats of a group, and at
// most AppLimit times per AppWindow per app, so a crash loop cannot flood
// anyone. Deliveries run in their own goroutines with a timeout; Notify
// never blocks on them and Close waits for the ones in flight.
package crash
