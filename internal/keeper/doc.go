// Package keeper runs the processes of each app under a keeper process of
// that app's own — the keel binary re-executed as "keel __keeper" in a
// session of its own — and is the daemon's client of those keepers
// (Spawner, a supervisor.Spawner).
//
// A keeper process holds one keeper per instance (below, "the keeper" is
// that per-instance part: its socket, state, logs and owner loop) and a
// host around them (host.go): Spawner starts a keeper process for an app's
// first instance with Config.Host set, and asks it for every further
// instance of the app on its socket run/<host>.host.sock — a Config with
// its listening sockets, then EOF, exactly as on a new keeper's stdin,
// answered with the handshake line. The keeper process ends when its last
// instance has been released. Apps never share one, so a fault in one
// app's keeper costs no other app anything. A Spawner only sends
// instances to keeper processes it started itself (a new daemon starts a
// new one per app; the adopted one ends as its instances are replaced),
// and a request that finds its keeper process gone or going (no
// handshake) goes to a new one: nothing was started.
//
// A keeper spawns the app (package proc), owns its stdout and stderr pipes
// and writes them to the log files (package logs), is the one waiter of
// the app, escalates a stop to SIGKILL of the group on its own, detects
// readiness, and serves a unix socket through which the daemon commands it
// and hears its events. The daemon holds nothing the app needs: when the
// daemon dies, the app keeps serving and logging, and the next daemon
// adopts it (Spawner.Survivors).
//
// # Starting a keeper
//
// Spawner.Spawn starts "keel __keeper" with Setsid, the daemon's
// environment with GOMAXPROCS=1 (the apps get the daemon's own value back
// through KEEL_APP_GOMAXPROCS; a keeper started without them execs itself
// once to get there, see procs.Limit), and
//
//	stdin   a unix socket: the Config as JSON, then EOF; the app's
//	        listening sockets travel with it as SCM_RIGHTS
//	stdout  the handshake pipe
//	stderr  /dev/null, until the keeper knows its id: then its own
//	        diagnostic log, $KEEL_HOME/run/<id>.log
//
// A Spawner can keep one such keeper started ahead of time (the standby),
// blocked on its stdin, for an app's first instance; a standby whose
// daemon goes away sees EOF and exits having created nothing. keel's
// daemon turns it off (SpawnerConfig.NoStandby): further instances go to
// the app's running keeper process, and an idle standby cost 3 MB. (With
// --config <file> instead of stdin, the listening sockets are expected as
// fds 3, 4, ….)
//
// The keeper reads the Config, creates its socket, spawns the app and
// writes one handshake line to stdout, then points stdin and stdout at
// /dev/null, so nothing of the daemon's stays open in it:
//
//	{"ok":true,"state":{…}}      the app runs; state is a State
//	{"error":"…"}                nothing runs; the error says why
//
// The keeper ignores SIGPIPE (it catches it, so its children still get the
// default), and stops its app gracefully on SIGTERM, SIGINT: it sends the
// app's kill signal, SIGKILLs the group after kill_timeout, and exits once
// the exit was reported to the daemons connected then.
//
// # What an instance costs
//
// A keeper process holds thousands of instances, so what each one holds
// while it idles matters more than what its start costs. The instances of
// a keeper process share one goroutine that hears of their exits at
// SIGCHLD (proc.ExitWatcher), one that captures every stdout and stderr
// through epoll (logs.Poller) and one that accepts on every instance's
// socket and reads every daemon's commands (wirePoller); both wait in
// Go's own poller, so neither holds a thread. Each instance
// keeps its owner loop; a writer runs only while something is queued for
// a daemon, and reads take their buffers from a pool only while bytes are
// there.
//
// The daemon's side is built the same way: its Spawner reads every keeper
// connection through one wirePoller, and what it reads for a process is
// handled by a goroutine that runs only while something is queued (the
// poller must not wait for a process whose lock a slow write holds). An
// idle instance so holds no goroutine in the daemon, and a keeper process
// none either: the daemon hears of their exits at SIGCHLD.
//
// # Files
//
//	run/<id>.sock    the keeper's socket (run/ is 0700; the peer's uid is checked)
//	run/<id>.json    the State at spawn: ids and start times of keeper and app
//	run/<id>.notify  the app's NOTIFY_SOCKET (ready: notify)
//	run/<id>.log     the keeper's diagnostics (a keeper of one instance)
//	run/<host>.host.sock  the keeper process's spawn socket (Config.Host)
//	run/<host>.host.log   the keeper process's diagnostics
//
// A keeper removes its files when it is released. A daemon that finds
// files whose keeper is dead (Survivors) SIGKILLs the app's process group
// if the recorded app (pid and start time) still runs, then removes them.
// Socket paths longer than a sockaddr_un allows are reached through
// /proc/self/fd/<dir>/, and a long NOTIFY_SOCKET falls back to the
// abstract namespace.
//
// # Protocol
//
// JSON lines over the stream socket. On every connection the keeper first
// sends a hello with its whole current state, then events as they happen:
//
//	{"type":"hello","state":{"version":1,"id":…,"app":…,"instance":…,"restarts":…,
//	  "pid":…,"pid_start":…,"started":…,"keeper_pid":…,"keeper_start":…,
//	  "ready":false,"status":"","stopping":false,"crashing":false,"stop_requested":false,"exit":null}}
//	{"type":"ready"}                       the app is ready (per its ready mode)
//	{"type":"status","text":"…"}           sd_notify STATUS=
//	{"type":"stopping"}                    sd_notify STOPPING=1, or Node's preload closing
//	{"type":"stopping","crash":true,"text":"…"}
//	                                       a graceful crash: Node's preload hit a fatal
//	                                       error, printed it (text, also the state's
//	                                       "crash_text"), stopped accepting and drains;
//	                                       the app exits 1 within kill_timeout (the
//	                                       keeper SIGKILLs the group 1 s after that).
//	                                       May follow a plain stopping.
//	{"type":"exit","exit":{"code":0,"signal":null,"at":"…"}}
//	{"type":"reply","seq":N}               a command succeeded
//	{"type":"reply","seq":N,"error":"…","code":"exited"|"running"|"bad_command"}
//	{"type":"listen","listen":{"id":K,"host":"","port":3000,"backlog":0,"ipv6_only":false,"exclusive":false}}
//	        the app (a Node server in cluster mode) listens on a port that
//	        all its instances share: the daemon is asked for the socket.
//	        Sent to every connected daemon, and again to each daemon that
//	        connects until one answered; after the app's exit it is
//	        forgotten. The first answer counts.
//
// The daemon sends commands; each gets a reply with its seq:
//
//	{"cmd":"signal","seq":N,"signal":"SIGHUP"}          signal the app's process group
//	{"cmd":"stop","seq":N,"signal":"SIGTERM","timeout_ms":5000}
//	        signal the group; SIGKILL it if the app has not exited after the
//	        timeout — the keeper does this itself, connected or not. A
//	        second stop can only bring the SIGKILL closer.
//	{"cmd":"release","seq":N}
//	        the exit is recorded: the keeper removes its files and exits.
//	        Refused ("running") before the exit.
//	{"cmd":"socket","seq":N,"id":K,"name":"cluster-tcp-3000","fds":1}  + the socket
//	{"cmd":"socket","seq":N,"id":K,"error":"…","code":"EADDRINUSE"}
//	        the answer to listen request K (SpawnerConfig.ListenFor). The
//	        keeper keeps the socket, under its name, until it ends (a later
//	        socket of the same name takes its place in the list) and hands
//	        it to the app; an error reaches the app's server with the code.
//	        An answer to a request nobody waits for any more is dropped.
//	{"cmd":"sockets","seq":N}
//	        hand back every listening socket: the reply is
//	        {"type":"reply","seq":N,"sockets":[{"name":"tcp-3000","kind":"listen"},
//	        {"name":"cluster-tcp-3000","kind":"cluster"}],"fds":2} with the
//	        sockets in that order. Answered also after the app's exit.
//
// A line with "fds":N carries N descriptors as SCM_RIGHTS: the sender
// writes it with one sendmsg, so they arrive with its first byte, and the
// reader gives the line the first N descriptors it received and no line
// took yet. Only socket commands and sockets replies carry any.
//
// Signalling an app that exited answers code "exited". The hello carries
// the pid, so there is no separate "started" event: a keeper serves its
// socket only once its app runs.
//
// The listen message, the socket and sockets commands, and "crash",
// "crashing", stopping's "text" and "crash_text" were added to protocol
// version 1 without changing it: a keeper that does not know "sockets"
// answers bad_command, which a daemon takes as "no sockets"; only a keeper
// of this version sends listen; a daemon that does not know "crash" sees a
// plain stopping; without a crash text the daemon reads the crash from
// the logs.
//
// # Sockets across a daemon's restart
//
// A keeper holds its app's listening sockets — the `listen` sockets it
// inherited and those a daemon bound for it in cluster mode — until it
// ends, also while no daemon runs and after the app exited. A daemon that
// adopts keepers (Spawner.Survivors) asks each for its sockets before
// Survivors returns, and hands them to SpawnerConfig.AdoptSockets, so the
// new daemon shares the sockets its surviving instances accept on instead
// of binding their ports again (which would fail, or split the
// connections between two sockets). Listen requests are answered only
// once that is done; then SpawnerConfig.AdoptionDone is called. The
// daemon gives each instance its own socket of a TCP address (one member
// of an SO_REUSEPORT group per instance number), so each handed-back
// Socket carries the keeper's instance as its Slot.
//
// A keeper whose app exits while no daemon is connected steers the new
// connections of those groups to the app's other instances itself
// (sockets.Steer); a connected daemon does the steering, as its
// supervisor says which instances serve (supervisor.Config.Serving).
//
// # Invariants
//
//   - The exit is reported only after both log pipes reached EOF (or 2 s
//     passed since the exit, in case a process outside the group holds
//     them) and the log files were closed: every line the app wrote before
//     it exited is in the files before anyone hears of the exit.
//   - When the app's leader exits, what is left of its process group is
//     SIGKILLed (proc.Options.KillGroupOnExit), and so is every other
//     descendant of that instance (proc.Options.KillDescendantsOnExit):
//     the keeper process is a child subreaper (PR_SET_CHILD_SUBREAPER), so
//     children that called setsid and the orphans of a double fork are
//     its descendants too, and it reaps those orphans. Each run of an
//     instance has its own KEEL_RUN_ID in its environment, which its
//     descendants inherit; at an instance's exit its orphans are the
//     keeper process's children that carry it (proc.Options.Mark). What
//     is left when the last instance ends is killed too. No descendant outlives
//     the app — after a stop, a restart, a reload or a crash alike — and
//     none holds the log pipes open past it.
//   - The keeper keeps its exit record until a daemon releases it, however
//     long no daemon is connected.
//   - Neither side lets a slow peer stall it. Each side queues what the
//     other has not read yet and merges status lines still waiting, so
//     the queues stay short; a keeper drops a daemon that stops reading
//     altogether (it gets the whole state again when it reconnects).
//   - A daemon that loses the connection to a keeper without an exit tries
//     the socket again (commands wait for that); if the keeper is gone it SIGKILLs the app's group
//     (checked against the recorded start time) and reports an exit with
//     Reason "keeper lost".
//
// # Node's IPC channel
//
// The `message` and `listen` ready modes and unmodified Node servers need
// Node's IPC channel. The keeper opens one through Options.NodeIPC (see
// NodeIPC) when its Config asks for it (every Node app, and any app whose
// readiness comes through the channel); without the hook such an app is
// treated as ready at once. OpenNodeChannel is keel's hook, over package
// nodeipc: node runs with `--require <preload>` (written once into the run
// directory), and the app's listen(port) gets
//
//   - the inherited socket, for a port named in the app's `listen`;
//   - in cluster mode (instances > 1 or cluster: true) without `listen`,
//     the socket the daemon binds once per app and address and shares
//     with every instance, asked for with a listen message;
//   - otherwise nothing: the app binds the port itself, as without keel.
//
// process.send('ready') makes the app ready for `ready: message`, a server
// listening for `ready: listen`.
package keeper
