// Package serve runs an http.Server the keel way: on the sockets keel passes
// it, reporting readiness, draining on the stop signal, and — if the app
// chooses — draining and exiting after an unexpected panic so that keel
// replaces the process with a clean one while its siblings serve.
//
// # Protocol
//
// keel (like systemd) starts every instance of an app with the app's
// listening sockets already open, as fds 3, 4, …, announced by LISTEN_FDS,
// named by LISTEN_FDNAMES, and meant for the process whose pid is
// LISTEN_PID; every instance shares the same sockets, and keel keeps them
// open across restarts, so a connection is never refused. Listeners takes
// them (checking LISTEN_PID first, and unsetting the variables so that child
// processes do not take them too).
//
// With `ready: notify`, keel waits for the instance to send READY=1 to the
// unixgram socket named by NOTIFY_SOCKET (sd_notify's protocol; Notify sends
// it) before it counts the instance online, for example during a rolling
// reload. Serve sends READY=1 once it serves, and STOPPING=1 when it begins
// to drain.
//
// # Stopping
//
// keel stops an instance with SIGTERM and, after kill_timeout (5s by
// default), SIGKILL. Run turns SIGTERM and SIGINT into a cancellation, and
// Serve drains, all within Options.ShutdownTimeout:
//
//  1. every answer from then on says "Connection: close", so a connection
//     closes after its next answer;
//  2. it stops accepting: the shared socket stays open in keel and the
//     other instances, which take the new connections;
//  3. it closes a connection only once it has stayed idle for a grace (one
//     second): a request a client already sent on a keep-alive connection,
//     or as the first request of a connection accepted just before the
//     drain, is answered instead of reset, so a rolling reload does not
//     fail the requests of busy keep-alive clients;
//  4. once every HTTP/1 connection has closed it shuts the http.Server
//     down, which drains HTTP/2 connections with GOAWAY.
//
// At the deadline Serve closes whatever is left and returns, with an error
// if a request was still in progress. net/http's Shutdown alone closes idle
// keep-alive connections at once, which fails the requests a busy client
// has already sent on them; see Serve for the details.
//
// # Panics
//
// Serve wraps the handler in guard.Middleware, so a panic in a handler, or in
// a goroutine the handler started through the request's scope
// (guard.ScopeOf(w)), answers that request 500 and is logged.
// Options.OnPanic says what happens next: KeepServing carries on;
// DrainAndExit stops accepting, finishes the requests in flight and returns
// an error wrapping ErrPanicked, so that main exits non-zero and keel starts
// a clean instance — the Go form of Node's "graceful" pattern of exiting
// after an uncaught exception.
//
// The package never calls os.Exit and handles signals only inside Run.
package serve
