// Hello world, unmodified style: listen(PORT). Under keel the preload
// routes the listen to keel's socket. Every response names its instance in
// X-Keel-Instance, so the load client can report each instance's share.
'use strict';
const http = require('http');
const id = process.env.KEEL_INSTANCE || process.env.NODE_APP_INSTANCE || String(process.pid);
const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  res.setHeader('X-Keel-Instance', id);
  res.end('hello\n');
}).listen(port);
