// Package trigger watches one app for the conditions under which keel
// restarts it though nothing crashed: memory over max_memory, a
// cron_restart activation, a change under a watch path, and a failing
// health_url.
//
// Start reads the app's options and starts one goroutine per configured
// trigger; a trigger that fires calls Config.Restart with a Restart that
// says which instance (or every one), why, and a detail for describe and
// the exit history. The trigger only asks: the daemon hands the request to
// the supervisor, which decides what a restart of a stopped or already
// restarting instance means. Stop ends every goroutine and watcher.
//
// The four triggers:
//
//   - max_memory: every Config.MemoryInterval, the RSS of each live
//     instance (its process and descendants, by default) is compared with
//     the limit; an instance over it is asked to restart once per process:
//     the same pid does not fire again while it restarts.
//   - cron_restart: a standard five-field spec or a descriptor (@hourly,
//     @every 1h30m), in local time unless it starts with CRON_TZ=; every
//     activation asks to restart every instance.
//   - watch: the paths (relative ones against the app's cwd), directories
//     recursively, including directories created later. Events under
//     node_modules and .git, and names matching watch_ignore, do not count.
//     A burst of changes becomes one restart after Config.Debounce of quiet
//     (at most ten Debounce periods after the burst began, so a file that
//     changes without pause still restarts the app). A watched file is
//     watched through its directory, so an editor that writes a new file
//     and renames it over the old one is seen.
//   - health_url: polled every health_interval while an instance is live;
//     health_failures consecutive failures (non-2xx, refused, timeout) ask
//     to restart every instance, and the count starts again.
package trigger
