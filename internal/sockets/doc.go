// Package sockets opens the listening sockets keel owns and hands to the
// instances of an app (SPEC.md, "What an instance gets": sockets).
//
// # Addresses
//
// [Parse] accepts the forms of the `listen` option:
//
//	:3000                  every interface (IPv6 and IPv4 on one dual-stack socket)
//	127.0.0.1:3000         one IPv4 address
//	[::1]:3000             one IPv6 address
//	tcp://host:port        the same as host:port
//	unix:///abs/path       a unix stream socket at an absolute path
//
// A host may also be a name ("localhost:3000"); it is resolved when the
// socket is opened, and the first address is used, as net.Listen does.
//
// Every address has a stable [Addr.Name] for LISTEN_FDNAMES: "tcp-3000",
// "tcp-127.0.0.1-3000", "tcp-__1-3000" (':' is not allowed in a name, so an
// IPv6 host has its colons written as '_'), "unix-/run/app.sock". The name
// depends only on what the user wrote (after parsing), never on the
// resolved or bound address, so it is the same across restarts.
//
// # Sockets
//
// [Listen] opens one listening socket and returns it as a [Listener] whose
// [Listener.File] is what goes into exec.Cmd.ExtraFiles. Properties, all
// chosen so that an inheriting process sees what systemd would give it:
//
//   - SO_REUSEADDR is set, so a restarted daemon can bind again while old
//     connections sit in TIME_WAIT.
//   - The backlog is net.core.somaxconn (see [Somaxconn]), not Node's 511:
//     while no instance is accepting (all of them restarting), connections
//     wait in this queue instead of being refused.
//   - The descriptor is close-on-exec in keel's own process, so it leaks into
//     no child by accident. os/exec's ExtraFiles dup2()s it onto fd 3, 4, …
//     in the child, and the copy made by dup2 is not close-on-exec: the
//     child, and only the child, inherits it.
//   - The socket is created in blocking mode and keel never changes that, so
//     (*os.File).Fd, which os/exec calls, changes nothing either. Note that
//     O_NONBLOCK belongs to the open file description, which every process
//     holding the socket shares: once an instance's runtime (Node, Go)
//     switches it to non-blocking, every holder sees a non-blocking socket.
//     Runtimes that accept in an event loop need exactly that; a program that
//     wants blocking accept(2) must clear O_NONBLOCK on its own descriptor
//     (which again affects the others) — as with systemd.
//   - A unix socket's file gets mode 0660 (owner and group may connect)
//     unless [Options].Mode says otherwise; the mode is set between bind and
//     listen, so no client can connect before it applies. An existing file
//     at the path is removed only if it is a socket that nothing answers on
//     (a stale one left by a crash); a live socket or any other kind of file
//     is an error. [Listener.Close] removes the file it created, and only
//     that file (checked by device and inode).
//
// # Balancing
//
// One shared socket is accepted on by every instance; the kernel wakes one
// waiting acceptor per connection. [ListenGroup] instead opens n sockets
// bound to the same address with SO_REUSEPORT, one per instance, and the
// kernel spreads new connections over them by a hash of the 4-tuple. The
// catch of the group: connections already queued on one member's socket are
// reset when that member's socket is closed, so a group member must stay
// open (held by keel) for as long as the address is served, and an instance
// that goes away must have its socket handed to its successor rather than
// closed. bench/ measures both.
//
// # The set
//
// A [Set] holds the sockets keel owns while the apps exist, opened once per
// address and kept across restarts and reloads, so a port never refuses a
// connection while its app is defined:
//
//   - the sockets of every app's `listen` ([Set.Ensure], [Set.Files]),
//     inherited by its instances as fds 3, 4, …; apps naming the same
//     address share them;
//   - the sockets bound for Node apps in cluster mode ([Set.ListenFor]),
//     one per app and address.
//
// A TCP address is a group of SO_REUSEPORT sockets, one member per
// instance slot: instance N accepts on member N, and the kernel spreads new
// connections over the members. One socket shared by every instance would
// let whichever instance is awake take a whole burst (bench/README.md has
// the measurements). The set steers new connections ([Steer]) to the
// members of the slots that serve, as [Set.Serving] last said — the
// supervisor is the one that knows, and the only one that says — so a
// dead, starting or stopping instance gets none; connections already
// queued on its member wait there for the instance's replacement, which
// accepts on the same member, as does the new process of a reload. Members
// are never closed one by one, only with their whole group, which keeps
// member N at position N in the kernel's group. A unix socket is one
// socket shared by every instance.
//
// A new daemon, while instances of an earlier one survive, takes their
// sockets back ([Set.Adopt], [Set.AdoptionDone]) instead of binding the
// ports again.
//
// One goroutine owns a Set's state; its methods are safe for concurrent
// use. Nothing else in this package keeps mutable state outside the values
// it returns. A Listener may be used from several goroutines.
package sockets
