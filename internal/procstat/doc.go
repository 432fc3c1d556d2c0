// Package procstat measures processes on Linux from /proc: resident memory
// and CPU use, of a process together with its descendants.
//
// Why descendants: an app is often a wrapper (a shell script, npm, a
// launcher) whose child does the work. Measuring only the pid keel started
// would show a 3 MB shell while its 2 GB child grows; so a Stat covers the
// whole tree below the pid, found through /proc/<pid>/task/<tid>/children
// (or, on kernels without that file, by scanning /proc for parent pids).
//
// Memory is resident set size (RSS: anonymous, file-backed and shared pages
// that are in RAM), summed over the tree. Pages shared between processes of
// the tree are counted once per process, as ps and pm2 do; the figure is an
// upper bound of what the tree holds.
//
// CPU is the tree's user+system time used between two samples divided by
// the wall-clock time between them: 100 means one core fully busy, 200 two.
// The time of children the tree has already reaped is included (through
// cutime/cstime), so a short-lived child's work is not lost when it exits
// between samples.
//
// Everything here reads small /proc files with plain system calls into one
// reused buffer. Finding children costs one read per thread, so a sample of
// eight trees of multi-threaded processes (Go or Node, ~8 threads each)
// takes about 0.3 ms (BenchmarkSample8); once a second that is noise.
// Nothing blocks on anything but /proc.
package procstat
