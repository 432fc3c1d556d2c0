// Package nodeipc is keel's side of Node's IPC channel, and the preload
// script that lets an unmodified Node server accept on a socket keel owns
// (SPEC.md, "Unmodified Node servers"; ../shared/FINDINGS.md has the
// measurements behind the choices here).
//
// # The channel
//
// [NewChannel] makes a SOCK_STREAM socketpair. The child's end is
// inherited as a descriptor named by NODE_CHANNEL_FD, with
// NODE_CHANNEL_SERIALIZATION_MODE=json and keel's marker KEEL_NODE_IPC=1
// ([ChildEnv]). Node then sets up process.send and process.on('message'),
// exactly as for a child started with child_process.fork. Messages are JSON
// values, one per line, both ways; the app's process.send('ready') arrives
// as the line "ready". A listening socket travels the way Node sends one:
// one sendmsg(2) whose data is the line
//
//	{"cmd":"NODE_HANDLE","type":"net.Native","msg":{…}}
//
// and whose control data is SCM_RIGHTS with the descriptor. Node answers
// {"cmd":"NODE_HANDLE_ACK"}, or {"cmd":"NODE_HANDLE_NACK"} when no
// descriptor came, and delivers msg with the raw handle. Node sends (and
// so expects) one unacknowledged handle at a time, and a NACKed handle is
// sent again.
//
// Node delivers a message whose "cmd" starts with "NODE_" as the internal
// event 'internalMessage', never to the app's process.on('message'). keel's
// own commands therefore all start with "NODE_KEEL_"; the app's traffic on
// the channel is untouched and its 'message' listeners see only what the
// parent sends on purpose.
//
// # keel's protocol
//
// From the app (the preload) to keel:
//
//	{"cmd":"NODE_KEEL_LISTEN","id":1,"port":3000,"host":"","backlog":0,"exclusive":false,"ipv6Only":false}
//	    a server's listen(port[, host][, backlog]) or listen({port, host, …});
//	    host "" is every interface; backlog 0 means the app gave none.
//	{"cmd":"NODE_KEEL_LISTENING","id":1,"keel":true,"address":"::","family":"IPv6","port":3000}
//	    the server is listening: "keel" on keel's socket, or false when it
//	    bound its own (a "self" answer, or a path/fd/handle listen, then id 0
//	    and "path" for a unix socket). This is readiness for `ready: listen`.
//	{"cmd":"NODE_KEEL_STOPPING","signal":"SIGTERM"}
//	    the stop signal arrived and the preload is closing the servers.
//	{"cmd":"NODE_KEEL_STOPPING","signal":"SIGTERM","crash":true,"text":"…"}
//	    a fatal error: the preload printed text (the error as Node prints
//	    it, to stderr) and is closing the servers; the process exits 1
//	    once they drained (graceful crash).
//	"ready", or anything else the app sends with process.send
//	    passed on unchanged (the string "ready" is `ready: message`).
//
// From keel to the app, the answer to NODE_KEEL_LISTEN, one of:
//
//	NODE_HANDLE with msg {"cmd":"NODE_KEEL_LISTEN_REPLY","id":1,"backlog":4096} + the socket
//	    listen on this handle (with the app's own backlog if it gave one);
//	{"cmd":"NODE_KEEL_LISTEN_REPLY","id":1,"self":true}
//	    bind the port yourself, as without keel;
//	{"cmd":"NODE_KEEL_LISTEN_REPLY","id":1,"error":"…","code":"EADDRINUSE"}
//	    the server emits 'error' with this code and syscall "listen".
//
// [Handler.Serve] is the parent's side: it answers requests through a
// [ListenFunc] (in the keeper: keel's `listen` socket for that port, one
// bound once and shared in cluster mode, or "self") and reports [Event]s.
// It puts every socket it hands over in non-blocking mode first: libuv
// accepts until EAGAIN and leaves a received socket's mode as it came, so
// on a blocking socket shared by several instances, the one that loses
// the race for a connection would block its event loop in accept(2) —
// its open connections stalled — until the next connection arrived.
//
// # The preload
//
// [PreloadPath] writes the embedded script (preload.cjs) to a file for
// `node --require <path> app.js`. Under keel's channel it:
//
//   - makes stdout and stderr blocking, so no line is lost when the app
//     calls process.exit() with writes queued;
//   - replaces net.Server.prototype.listen, which http, https and Express's
//     app.listen all go through: a listen on a TCP port asks keel with
//     NODE_KEEL_LISTEN and listens on the handle it gets; callbacks,
//     'listening', 'error', server.address() (the real socket's address)
//     and AbortSignal work as in Node; listens on a path, a descriptor or a
//     handle pass through untouched;
//   - keeps the event loop alive only while an answer is due (a 'disconnect'
//     listener, which Node counts as a reference on the channel, and a
//     timer); otherwise the channel stays unreferenced and the app exits
//     when its work is done, as without keel. If keel goes away before it
//     answers, the server binds the port itself;
//   - on the stop signal (KEEL_STOP_SIGNAL, default SIGTERM), unless the app
//     installed its own listener for it: stops accepting (closing only this
//     process's descriptor; the socket stays open in keel and the other
//     instances), lets in-flight requests finish, answers every later
//     request on a kept-alive connection with "Connection: close", closes
//     connections that stay idle for a second, and calls process.exit()
//     (status 0 unless the app set process.exitCode) once every server has
//     closed; the keel kill_timeout is the backstop. With no server
//     listening it re-raises the signal, so the app dies of it as it would
//     without keel;
//   - installs no 'uncaughtException' or 'unhandledRejection' handlers:
//     the app's errors end it as they would without keel; only
//   - with KEEL_GRACEFUL_CRASH_MS set (graceful crash), a fatal error — an
//     uncaught exception, or a rejection that --unhandled-rejections makes
//     fatal, in an app with no 'uncaughtException' listener of its own —
//     while servers listen: the preload wraps process._fatalException,
//     prints the error as Node would, sends NODE_KEEL_STOPPING with
//     "crash", answers the request the error came from (each 'request'
//     event of the app's HTTP servers marks its async context, which an
//     async hook carries to the work it starts) with a 500 if nothing of
//     its answer was sent, drains as on the stop signal and exits 1 once
//     the servers closed, or after the given time. A second fatal error
//     during the drain takes Node's own way: printed, exit 1 at once.
//
// The preload deletes KEEL_NODE_IPC, KEEL_STOP_SIGNAL and
// KEEL_GRACEFUL_CRASH_MS from process.env
// at once, so the processes the app starts (cluster workers, forked
// helpers, which inherit --require) stay inert instead of taking their
// channel to the app for keel's. Without the marker or without a channel
// the preload does nothing at all.
package nodeipc
