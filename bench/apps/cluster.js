// Node's own cluster module, the baseline keel is compared with: the
// primary forks WORKERS workers (default 2) that all listen on PORT; the
// primary hands connections out round-robin.
'use strict';
const cluster = require('cluster');
const http = require('http');
const port = Number(process.env.PORT || 3000);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork({ WORKER_ID: String(i) });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
  });
} else {
  const id = process.env.WORKER_ID;
  http.createServer((req, res) => {
    res.setHeader('X-Keel-Instance', id);
    res.end('hello\n');
  }).listen(port);
}
