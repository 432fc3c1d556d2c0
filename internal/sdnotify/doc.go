// Package sdnotify is the server side of systemd's notify protocol: the
// socket that NOTIFY_SOCKET names, on which a service reports readiness
// and status with sd_notify(3).
//
// A Server listens on a unixgram socket. Every datagram is one Message:
// newline-separated KEY=VALUE assignments such as READY=1, STATUS=…,
// STOPPING=1, RELOADING=1, WATCHDOG=1 or MAINPID=…. Datagrams are
// accepted from any process that can reach the socket — every process of
// the instance, as systemd's NotifyAccess=all — so the socket should live
// in a directory only its owner can enter. Peer credentials are not
// checked, and file descriptors sent along (FDSTORE=1) are not accepted:
// the kernel closes them.
//
// A path that begins with '@' names a socket in the abstract namespace,
// as systemd and sd_notify(3) understand it.
//
// The package is a leaf: it imports only the standard library and
// golang.org/x/sys.
package sdnotify
