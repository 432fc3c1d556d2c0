// A Node app that handles SIGTERM itself (scenario a): it reports readiness
// with process.send('ready') (ready: message), and on SIGTERM stops
// accepting, answers every later request on a kept-alive connection with
// "Connection: close", closes connections that stay idle, and exits 0 once
// the server has closed. It takes keel's socket from LISTEN_FDS (fd 3) when
// there is one, and binds PORT otherwise.
'use strict';
const http = require('http');
const id = process.env.KEEL_INSTANCE || process.env.NODE_APP_INSTANCE || String(process.pid);
const port = Number(process.env.PORT || 3000);
const idleGraceMs = 1000;

let stopping = false;
const server = http.createServer((req, res) => {
  res.setHeader('X-Keel-Instance', id);
  if (stopping) res.setHeader('Connection', 'close');
  res.end('hello\n');
});
const sockets = new Set();
server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});

const onListening = () => {
  if (process.send) process.send('ready');
};
if (Number(process.env.LISTEN_FDS) > 0 && Number(process.env.LISTEN_PID) === process.pid) {
  server.listen({ fd: 3 }, onListening);
} else {
  server.listen(port, onListening);
}

process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  // net.Server's close: stop accepting, keep the open connections.
  require('net').Server.prototype.close.call(server, () => process.exit(0));
  for (const s of sockets) {
    const res = s._httpMessage;
    if (res && !res.writableEnded) {
      if (!res.headersSent) res.shouldKeepAlive = false; // Connection: close
      continue;
    }
    // Idle: give a request already on its way the time to arrive.
    setTimeout(() => {
      if (!s._httpMessage || s._httpMessage.writableEnded) s.destroy();
    }, idleGraceMs).unref();
  }
});
