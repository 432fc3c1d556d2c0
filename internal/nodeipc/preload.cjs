'use strict';
// keel's preload for Node apps, loaded with `node --require <this file>`.
// It lets an unmodified server's listen(port) accept on a socket keel owns,
// reports readiness, closes servers gracefully on the stop signal and on a
// fatal error (graceful crash), and keeps every log line. The protocol is
// described in internal/nodeipc/doc.go.
//
// Rules this file keeps:
// - Without keel's channel (KEEL_NODE_IPC=1 and an IPC channel) it does
//   nothing at all.
// - It never swallows the app's errors: no 'uncaughtException' or
//   'unhandledRejection' handlers; a failed listen emits 'error' on the
//   server as Node would. A fatal error still ends the process with status
//   1, printed as Node prints it; graceful crash only delays the exit until
//   the servers drained (or kill_timeout passed), and only when Node would
//   have exited: the app's own handlers and --unhandled-rejections decide
//   that, as without keel.
// - It never keeps the event loop alive on its own, except while waiting for
//   keel's answer to a listen request.
// - Its messages use commands starting with "NODE_", which Node delivers as
//   'internalMessage', so the app's process.on('message') never sees them.
(function keelPreload() {
  const env = process.env;
  if (env.KEEL_NODE_IPC !== '1') return;
  if (typeof process.send !== 'function' || !process.channel) return;
  const stopSignalName = env.KEEL_STOP_SIGNAL || 'SIGTERM';
  // How long a graceful crash may drain (the app's kill_timeout); absent:
  // graceful crash is off.
  const crashDrainMs = Number(env.KEEL_GRACEFUL_CRASH_MS) || 0;
  // The most of a fatal error's text sent to keel (its end, as keel reads
  // the end of a log for a crash); keel keeps at most 64 KiB of it.
  const crashTextMax = 64 * 1024;
  // Processes the app starts (cluster workers, forked helpers) inherit
  // process.env: they must not take their channel to the app for keel's.
  delete env.KEEL_NODE_IPC;
  delete env.KEEL_STOP_SIGNAL;
  delete env.KEEL_GRACEFUL_CRASH_MS;

  const net = require('net');
  const { signals } = require('os').constants;
  const stopSignal = signals[stopSignalName] ? stopSignalName : 'SIGTERM';

  // How long an idle keep-alive connection may stay open once the servers
  // are closing: a client that sends its next request within this time
  // gets its answer with "Connection: close" instead of a closed socket.
  const idleGraceMs = 1000;

  // 1. Nothing the app writes is lost at process.exit(): libuv's stdout
  //    and stderr are non-blocking pipes whose queued writes exit discards.
  for (const stream of [process.stdout, process.stderr]) {
    const h = stream && stream._handle;
    if (h && typeof h.setBlocking === 'function') h.setBlocking(true);
  }

  const noop = () => {};
  function send(msg) {
    if (!process.connected) return;
    try {
      // The callback turns a failed write into no event at all: keel
      // being gone must not crash the app.
      process.send(msg, undefined, { swallowErrors: true }, noop);
    } catch {
      // Serialisation cannot fail for our messages; nothing else throws.
    }
  }

  // 2. listen(port) asks keel for the socket.
  const origListen = net.Server.prototype.listen;
  const origClose = net.Server.prototype.close;
  const kVia = Symbol('keel.via');
  const kConns = Symbol('keel.connections');
  const servers = new Set(); // listening servers, through this function
  const pending = new Map(); // request id → settle(reply, handle)
  let nextId = 1;
  let keepAlive = null;
  let stopping = false;
  let crashing = false;
  // The request each piece of async work was started for, so a fatal error
  // can be pinned on it: only with graceful crash on.
  const requests = crashDrainMs > 0 && process.connected ? requestStore() : null;

  function toNumber(x) {
    x = Number(x);
    return x >= 0 ? x : false;
  }
  function isPort(p) {
    if (typeof p === 'number') return Number.isInteger(p) && p >= 0 && p <= 0xffff;
    if (typeof p === 'string' && p.trim() !== '') return isPort(Number(p));
    return false;
  }
  function normalizeArgs(args) {
    if (typeof net._normalizeArgs === 'function') return net._normalizeArgs(args);
    if (args.length === 0) return [{}, null];
    let options = {};
    const a0 = args[0];
    if (typeof a0 === 'object' && a0 !== null) options = a0;
    else if (typeof a0 === 'string' && toNumber(a0) === false) options.path = a0;
    else {
      options.port = a0;
      if (args.length > 1 && typeof args[1] === 'string') options.host = args[1];
    }
    const cb = args[args.length - 1];
    return [options, typeof cb === 'function' ? cb : null];
  }

  function onDisconnect() {
    // keel went away while we waited: bind the port ourselves.
    for (const [id, settle] of pending) {
      pending.delete(id);
      settle(null, null);
    }
    released();
  }
  function waiting() {
    if (keepAlive) return;
    // Both keep the loop alive while an answer is due: the 'disconnect'
    // listener refs the channel (Node counts those listeners), the timer
    // covers an app that unref()ed the channel explicitly.
    keepAlive = setInterval(noop, 1 << 30);
    process.on('disconnect', onDisconnect);
  }
  function released() {
    if (pending.size > 0 || !keepAlive) return;
    clearInterval(keepAlive);
    keepAlive = null;
    process.removeListener('disconnect', onDisconnect);
  }

  process.on('internalMessage', (msg, handle) => {
    if (!msg || msg.cmd !== 'NODE_KEEL_LISTEN_REPLY') return;
    const settle = pending.get(msg.id);
    if (!settle) {
      if (handle) handle.close();
      return;
    }
    pending.delete(msg.id);
    released();
    settle(msg, handle);
  });

  function track(server, via) {
    server[kVia] = via;
    if (server[kConns]) return;
    const conns = (server[kConns] = new Set());
    if (requests && isHTTP(server)) trackRequests(server);
    // A TLS server's HTTP layer works on the decrypted sockets.
    const event = typeof server.addContext === 'function' ? 'secureConnection' : 'connection';
    server.on(event, (sock) => {
      conns.add(sock);
      sock.once('close', () => conns.delete(sock));
      if (stopping) drainSocket(server, sock);
    });
    server.on('listening', () => {
      const v = server[kVia];
      if (!v) return; // listened on again without us (after close)
      servers.add(server);
      installStop();
      const a = server.address();
      const m = { cmd: 'NODE_KEEL_LISTENING', id: v.id, keel: v.keel };
      if (typeof a === 'string') m.path = a;
      else if (a) Object.assign(m, { address: a.address, family: a.family, port: a.port });
      send(m);
    });
    server.on('close', () => {
      server[kVia] = null;
      servers.delete(server);
      if (stopping) maybeExit();
      else if (servers.size === 0) uninstallStop();
    });
  }

  function keelListen(...args) {
    if (this._handle || stopping || !process.connected) {
      return origListen.apply(this, args);
    }
    const [options, cb] = normalizeArgs(args);
    const o = options._handle || options.handle || options;
    const portOmitted =
      args.length === 0 ||
      typeof args[0] === 'function' ||
      ('port' in o && (o.port === undefined || o.port === null));
    // Handles, descriptors and paths are the app's own business.
    if (o !== options || (typeof o.fd === 'number' && o.fd >= 0) ||
        (!portOmitted && typeof o.port !== 'number' && typeof o.port !== 'string')) {
      track(this, { id: 0, keel: false });
      return origListen.apply(this, args);
    }
    if (!portOmitted && !isPort(o.port)) {
      return origListen.apply(this, args); // throws Node's own error
    }
    const port = portOmitted ? 0 : Number(o.port);
    const host = o.host ? String(o.host) : '';
    const backlog = o.backlog || toNumber(args.length > 1 && args[1]) ||
      toNumber(args.length > 2 && args[2]) || 0;
    const exclusive = !!o.exclusive;
    const ipv6Only = !!o.ipv6Only;
    const signal = o.signal;

    if (cb !== null) this.once('listening', cb);
    if (signal !== undefined) {
      if (typeof signal !== 'object' || signal === null || !('aborted' in signal)) {
        return origListen.apply(this, args); // throws Node's own error
      }
      const onAbort = () => this.close();
      if (signal.aborted) process.nextTick(onAbort);
      else signal.addEventListener('abort', onAbort, { once: true });
    }
    // Node's own marker of the current listen call: close() and a newer
    // listen() change it, and a late answer is then dropped.
    this._listeningId = (this._listeningId || 0) + 1;
    const listeningId = this._listeningId;
    const id = nextId++;
    const server = this;
    pending.set(id, (reply, handle) => {
      if (server._listeningId !== listeningId || server._handle || stopping) {
        if (handle) handle.close();
        return;
      }
      if (handle) {
        track(server, { id, keel: true });
        origListen.call(server, handle, backlog || (reply && reply.backlog) || 511);
      } else if (reply && reply.error) {
        const err = new Error(`listen ${reply.code || 'EKEEL'}: ${reply.error} ${host || '::'}:${port}`);
        err.code = reply.code || 'EKEEL';
        err.syscall = 'listen';
        err.address = host || '::';
        err.port = port;
        server.emit('error', err);
      } else {
        track(server, { id, keel: false });
        origListen.call(server, { port, host: host || undefined, backlog, exclusive, ipv6Only });
      }
    });
    waiting();
    send({ cmd: 'NODE_KEEL_LISTEN', id, port, host, backlog, exclusive, ipv6Only });
    return this;
  }
  Object.defineProperty(keelListen, 'name', { value: 'listen' });
  net.Server.prototype.listen = keelListen;

  // 3. The stop signal closes the servers gracefully, unless the app
  //    handles that signal itself.
  let stopInstalled = false;
  function installStop() {
    if (stopInstalled) return;
    stopInstalled = true;
    // First in line, so it sees every listener the app installed.
    process.prependListener(stopSignal, onStop);
  }
  function uninstallStop() {
    if (!stopInstalled) return;
    stopInstalled = false;
    process.removeListener(stopSignal, onStop);
  }
  function onStop() {
    if (process.listenerCount(stopSignal) > 1) return; // the app's call
    if (stopping) return;
    if (servers.size === 0) {
      // Nothing to close: die of the signal, as without keel.
      uninstallStop();
      process.kill(process.pid, stopSignal);
      return;
    }
    send({ cmd: 'NODE_KEEL_STOPPING', signal: stopSignal });
    drainAll();
  }
  function drainAll() {
    stopping = true;
    for (const [id, settle] of pending) {
      pending.delete(id);
      settle(null, null);
    }
    released();
    for (const server of [...servers]) drain(server);
  }
  // Each request's response becomes the store of the connection's async
  // context before the app's listeners run, so the timers and promises its
  // handler starts carry it. A listener, not a wrapper of emit: the stack
  // of an error thrown in a handler stays as without keel.
  function trackRequests(server) {
    server.prependListener('request', (req, res) => requests.enterWith(res));
  }
  // AsyncLocalStorage's propagation, less two costs it pays on Node 20:
  // it writes its slot on every async resource, even with no request to
  // carry, and on the ten or so TickObjects Node's own http code makes
  // per request. That cost a hello-world server 4.5 % of its throughput;
  // this costs 1.5 % (bench/cmd/tracking -alone). The price: an error
  // thrown in a process.nextTick callback is not pinned on its request
  // (closed when the drain ends); timers, promises, I/O callbacks and
  // the handler itself are.
  function requestStore() {
    const hooks = require('async_hooks');
    const current = hooks.executionAsyncResource;
    const slot = Symbol('keel.request');
    hooks.createHook({
      init(asyncId, type, triggerAsyncId, resource) {
        if (type === 'TickObject') return;
        const res = current()[slot];
        if (res !== undefined) resource[slot] = res;
      },
    }).enable();
    return {
      enterWith(res) { current()[slot] = res; },
      getStore() { return current()[slot]; },
    };
  }
  function isHTTP(server) {
    return typeof server.closeIdleConnections === 'function';
  }
  function drain(server) {
    if (isHTTP(server)) {
      // Every response from now on says "Connection: close".
      server.prependListener('request', (req, res) => {
        res.shouldKeepAlive = false;
      });
    }
    // net's close, not http's: http's would also close every idle
    // keep-alive connection at once, failing requests already on the wire.
    origClose.call(server);
    for (const sock of server[kConns]) drainSocket(server, sock);
  }
  function busy(res) {
    return !!res && !(res.writableEnded || res.finished);
  }
  function drainSocket(server, sock) {
    if (!isHTTP(server)) return; // other protocols end on their own
    const res = sock._httpMessage;
    if (busy(res)) {
      if (!res.headersSent) {
        res.shouldKeepAlive = false;
        return;
      }
      res.once('finish', () => closeWhenIdle(sock));
      return;
    }
    closeWhenIdle(sock);
  }
  function closeWhenIdle(sock) {
    const t = setTimeout(() => {
      if (!busy(sock._httpMessage)) sock.destroy();
    }, idleGraceMs);
    t.unref();
  }
  function maybeExit() {
    // After the app's own 'close' listeners and callbacks have run.
    if (servers.size === 0) setImmediate(() => process.exit(crashing ? 1 : undefined));
  }

  // 4. Graceful crash. Node hands every uncaught exception, and every
  //    rejection its --unhandled-rejections mode makes fatal, to
  //    process._fatalException, which calls the app's 'uncaughtException'
  //    listeners or, with none, has Node print the error and exit 1. When
  //    Node would exit and servers are listening, the preload prints the
  //    error as Node would, tells keel (which steers new connections away
  //    and starts the replacement), answers the request that failed with
  //    500, drains the servers as on the stop signal and exits 1 once they
  //    closed or kill_timeout passed.
  //
  //    During that drain, a fatal error of another request still being
  //    answered is that request's own: it is printed and answered as the
  //    first, and the drain goes on (a request fails at most once, and no
  //    new ones come, so this cannot loop). Any other fatal error — of the
  //    request that failed first, of a request already answered, of no
  //    request — takes Node's own way at once: printed, exit 1.
  const nodeFatal = process._fatalException;
  const failed = new WeakSet(); // responses a fatal error was pinned on
  if (requests && typeof nodeFatal === 'function') {
    process._fatalException = function (err, fromPromise) {
      if (process.listenerCount('uncaughtException') > 0 ||
          process.hasUncaughtExceptionCaptureCallback()) {
        return nodeFatal.call(this, err, fromPromise); // the app's to handle
      }
      const res = requests.getStore();
      const another = crashing && !!res && !failed.has(res) && !res.writableEnded && !res.destroyed;
      if (crashing ? !another : stopping || servers.size === 0 || !process.connected) {
        return nodeFatal.call(this, err, fromPromise);
      }
      // Node's own handler, with a listener for once, still emits
      // 'uncaughtExceptionMonitor' and resets the async context the error
      // left behind.
      process.on('uncaughtException', noop);
      try {
        nodeFatal.call(this, err, fromPromise);
      } finally {
        process.removeListener('uncaughtException', noop);
      }
      if (another) {
        printFatal(err, fromPromise);
        answerFailed(res);
      } else {
        crash(err, fromPromise, res);
      }
      return true;
    };
  }
  function crash(err, fromPromise, res) {
    crashing = true;
    process.exitCode = 1;
    // The text goes to keel too: the replacement it starts now writes to
    // the same log files while this process drains, so what the log holds
    // when this one exits may be the replacement's crash, not this one's.
    const text = printFatal(err, fromPromise);
    send({ cmd: 'NODE_KEEL_STOPPING', signal: stopSignal, crash: true, text: text.slice(-crashTextMax) });
    if (res) answerFailed(res);
    setTimeout(() => process.exit(1), crashDrainMs).unref();
    drainAll();
  }
  // The failed request gets a 500 if nothing of its answer was sent; a
  // half-sent answer can only be cut off.
  function answerFailed(res) {
    failed.add(res);
    if (res.writableEnded || res.destroyed) return;
    if (!res.headersSent) {
      try {
        for (const name of res.getHeaderNames()) res.removeHeader(name);
        res.statusCode = 500;
        res.shouldKeepAlive = false;
        res.setHeader('Content-Type', 'text/plain; charset=utf-8');
        res.end('Internal Server Error\n');
        return;
      } catch {
        // Fall through: cut it off.
      }
    }
    res.destroy();
  }

  // What Node prints for a fatal error (node_errors.cc, ReportFatalException):
  // the place it was thrown ("file:line", the source line, a caret), a blank
  // line, util.inspect of the error, and "Node.js <version>". The place is
  // V8's and not visible to JavaScript; the stack gives it, except for an
  // error thrown far from where it was made. It returns what it printed.
  function printFatal(err, fromPromise) {
    const util = require('util');
    let text;
    if (err !== null && typeof err === 'object' && err.stack !== undefined) {
      let trace;
      try {
        trace = util.inspect(err, {
          colors: useColors(),
          customInspect: false,
          depth: Math.max(util.inspect.defaultOptions.depth, 5),
        });
      } catch {
        trace = String(err.stack);
      }
      const where = throwSite(err.stack, fromPromise);
      text = (where ? where + '\n' : '') + trace + '\n';
    } else {
      // Node puts the place it was thrown, which only V8 knows, between
      // the blank line and the value.
      if (err !== null && typeof err === 'object') {
        try {
          text = '\n' + util.inspect(err, { colors: useColors() }) + '\n';
        } catch {
          text = '\n<toString() threw exception>\n';
        }
      } else {
        text = '\n' + String(err) + '\n';
        if (!process.execArgv.includes('--trace-uncaught')) {
          text += '(Use `node --trace-uncaught ...` to show where the exception was thrown)\n';
        }
      }
    }
    if (!process.execArgv.includes('--no-extra-info-on-fatal-exception')) {
      text += `\nNode.js ${process.version}\n`;
    }
    try {
      require('fs').writeSync(2, text);
    } catch {
      // stderr is gone: nothing to tell.
    }
    return text;
  }
  function useColors() {
    const s = process.stderr;
    if (env.FORCE_COLOR !== undefined || s.isTTY) {
      const depth = s.getColorDepth || require('tty').WriteStream.prototype.getColorDepth;
      try {
        return depth.call(s) > 2;
      } catch {
        return false;
      }
    }
    return false;
  }
  // throwSite is the header Node prints above the error: where it was
  // thrown, taken from the stack's first frame. A rejection's header is
  // where the error was made, which is that frame; an exception's is the
  // throw, found by the "throw" before that frame's column.
  function throwSite(stack, fromPromise) {
    if (typeof stack !== 'string') return '';
    const m = /\n {4}at (?:.*? \()?((?:node:|file:|\/)[^\n]*?):(\d+):(\d+)\)?\n?/.exec(stack);
    if (!m || stack.indexOf('\n    at ') !== m.index) return '';
    const [, file, lineText, colText] = m;
    const line = Number(lineText);
    const src = sourceLine(file, line);
    if (src === undefined) return '';
    let col = Number(colText) - 1;
    if (col > src.length) return '';
    if (!fromPromise) {
      // The last "throw" before the error was made: "throw new E()",
      // "throw wrap(new E())".
      const t = src.slice(0, col).lastIndexOf('throw');
      if (t >= 0 && !/[\w$]/.test(src[t - 1] || '') && !/[\w$]/.test(src[t + 5] || '')) col = t;
    }
    const pad = src.slice(0, col).replace(/[^\t]/g, ' ');
    return `${file}:${line}\n${src}\n${pad}^\n`;
  }
  function sourceLine(file, line) {
    let code;
    try {
      if (file.startsWith('node:')) {
        // Node's own modules: their source is built in.
        if (process.execArgv.includes('--pending-deprecation')) return undefined;
        code = process.binding('natives')[file.slice(5)];
      } else {
        const path = file.startsWith('file:') ? require('url').fileURLToPath(file) : file;
        code = require('fs').readFileSync(path, 'utf8');
      }
    } catch {
      return undefined;
    }
    if (typeof code !== 'string') return undefined;
    const lines = code.split(/\r?\n/);
    return line >= 1 && line <= lines.length ? lines[line - 1] : undefined;
  }
})();
