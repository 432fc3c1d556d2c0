// Package logs captures an app's stdout and stderr into log files, rotates
// them by size, and reads them back for `keel logs` and for crash reports.
//
// # Files
//
// Each stream of each instance has one file, Path(home, app, instance,
// stream) = $home/logs/<app>-<instance>-<stream>.log, stream "out" or "err".
// Rotated files are the same path with .1 (newest) … .N (oldest) appended.
// App names may contain '-' and digits, so a file name is parsed from the
// right: the last two '-'-separated fields are the instance and the stream.
// Directories are created 0700 and files 0600: logs may hold secrets.
//
// # Record format
//
// A log file is a sequence of records, one per text line of the file:
//
//	record  = time SP mark SP payload LF
//	time    = "2006-01-02T15:04:05.000000000Z" (RFC 3339 in UTC, always
//	          nine fractional digits, so every time is 30 bytes)
//	mark    = "|" / "%" / kind id "." offset
//	kind    = "|" / "%" / "+"
//	id      = 8 lower-case hex digits, random per Capture call
//	offset  = decimal byte offset of this payload within the app's line
//	payload = the app's bytes, exactly as written, never containing LF,
//	          at most 64 KiB (MaxPayload)
//
// The time is when the writer read the bytes from the app's pipe (one clock
// reading per read(2), so lines that arrived together share a time).
//
//   - "|" — a whole line: the app wrote payload followed by "\n".
//   - "%" — a whole line that has no "\n": the app's stream ended (EOF) right
//     after payload. --raw reproduces it without a newline.
//   - A line longer than MaxPayload is split into several records that carry
//     the id of the Capture call that wrote them and the offset of their
//     payload in the line: "+id.0", "+id.65536", … ("+": more follows), and a
//     last one "|id.N" (the line ended with "\n") or "%id.N" (EOF came first).
//     Nothing is truncated or dropped. The id lets a reader put a long line
//     back together even when another writer's records fall between its
//     pieces; offset 0 marks a line's first piece.
//
// Payload bytes are stored as they are: invalid UTF-8, NUL, CR and escape
// sequences survive byte-exactly. A file line that is not a valid record (a
// foreign or damaged line) is read back as one whole line with the time of
// the record before it, so nothing in a file is ever hidden.
//
// Example: the app printed "hello\n" and "bad \xff\n" in one write, then
// "done" and exited without a final newline (\xff stands for the raw byte):
//
//	2026-11-25T10:00:00.123456789Z | hello
//	2026-11-25T10:00:00.123456789Z | bad \xff
//	2026-11-25T10:00:00.200000000Z % done
//
// # Writing
//
// A Writer appends to its file with O_APPEND, and each batch of whole
// records goes out in one write(2) while the writer holds an exclusive
// flock(2) on the file, so records from two writers of one path (the old
// and new keeper of one instance during a rolling reload) never interleave,
// and the size check before a write is exact. Before every write the writer
// compares the inode at the path with its open file and reopens the path if
// they differ (another writer rotated it, or someone moved it away). Bytes
// go to the file as soon as they are read from the pipe; nothing is held in
// memory except the unterminated end of the current line (at most
// MaxPayload bytes). Files are not fsynced.
//
// # Rotation
//
// When appending a batch would take the file past Options.MaxSize, the
// records that fit are written, then the writer (still holding the lock,
// and only if the path still names its file) renames path.N-1 → path.N, …,
// path → path.1 and starts a new file. A record larger than MaxSize is
// written alone into an empty file. MaxSize ≤ 0 never rotates. Options.Keep
// is how many rotated files are kept: Keep 0 keeps none (the full file is
// deleted when a new one starts); rotated files beyond Keep are deleted.
// spec.App defaults (10M, 5) come from the caller.
//
// # Reading
//
// Print tails the last N lines of each selected instance, merging its out
// and err files by time (ties keep file order), across rotated files when
// the current one holds fewer than N lines; the instances are then merged by
// time. Follow polls the files (every 100 ms by default): it reads what was
// appended, notices a rotation by the path's inode changing, finishes the
// old file through its open descriptor, reads any rotated file it had not
// seen yet, and continues in the new one, so no line is lost or repeated;
// files that appear later (a new instance) are picked up and read from
// their start. TailRaw returns the last bytes an app wrote on one stream.
//
// Output formats of Print:
//   - default: "app:0 | line" for stdout and "app:0 ! line" for stderr, the
//     "app:N" column padded to the widest one shown; bytes are written as
//     the app wrote them.
//   - Raw: exactly the app's bytes, nothing added; a line without "\n" at
//     EOF stays without it.
//   - JSON: one object a line, {"app","instance","stream","time","line"},
//     time in RFC 3339 UTC with nanoseconds. JSON strings must be UTF-8, so
//     when a line is not valid UTF-8, "line" has each invalid byte replaced
//     by U+FFFD and "line_base64" (standard base64, padded) holds the exact
//     bytes; "partial":true marks a line the app never ended with "\n".
package logs
