// Package control is the daemon's side of the control socket: HTTP/1.1 with
// JSON bodies over the unix socket $KEEL_HOME/keel.sock, served by
// internal/http1.
//
// # Protocol
//
// Every endpoint lives under api.Prefix ("/v1"). Commands are POSTs with a
// JSON body and answer an api.Result; reads are GETs:
//
//	POST /v1/start      api.StartRequest   → api.Result
//	POST /v1/stop       api.TargetRequest  → api.Result
//	POST /v1/restart    api.TargetRequest  → api.Result
//	POST /v1/reload     api.TargetRequest  → api.Result
//	POST /v1/delete     api.TargetRequest  → api.Result
//	POST /v1/scale      api.ScaleRequest   → api.Result
//	POST /v1/save                          → api.Result
//	POST /v1/resurrect                     → api.Result
//	POST /v1/kill                          → api.Result (then the daemon exits)
//	GET  /v1/list                          → []api.Instance
//	GET  /v1/describe?target=T             → []api.AppDetail (T defaults to "all")
//	GET  /v1/crashes?app=A                 → []api.CrashGroup (A optional)
//	GET  /v1/crashes/{id}                  → api.CrashDetail
//	GET  /v1/version                       → api.Version
//
// Every answer that is not 2xx carries an api.Error body: 400 for a request
// the server could not make sense of (bad JSON, bad target, a
// *spec.FieldError from the backend), 403 for a peer of another uid, 404 for
// a *spec.NotFoundError or an unknown endpoint, 405 for a known endpoint called
// with the wrong method, 500 for any other backend error; and, for a request
// the server will not read (see internal/http1), 400, 413 (a body over
// 8 MB), 431 (a head over 64 KB), 501 (a chunked body: send a
// Content-Length) or 505, after which the connection is closed. Arrays are
// never null: an empty list is [].
//
// # Security
//
// The socket file is made mode 0600 right after bind and before the first
// accept, whatever the umask. On top of that every connection's peer
// credentials (SO_PEERCRED) are read when it is accepted, and a request from
// any uid other than the server's own is answered 403 with a one-line
// message and reaches no backend method. A connection whose credentials
// cannot be read is refused the same way.
package control
