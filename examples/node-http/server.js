// An ordinary Node HTTP server: nothing in it knows about keel.
// `keel start examples/node-http/keel.yaml` runs it as 2 instances that
// share port 3000, and reloads it without dropping a request.
const http = require('http');

const instance = process.env.KEEL_INSTANCE ?? '?';

const server = http.createServer((req, res) => {
  if (req.url === '/crash') {
    // An async throw that try/catch cannot reach: keel restarts the
    // instance and files the stack under `keel crashes`.
    setTimeout(() => { throw new Error('crash requested by ' + req.url); });
  }
  res.setHeader('X-Keel-Instance', instance);
  res.end(`hello from instance ${instance} (pid ${process.pid})\n`);
});

server.listen(3000, () => {
  console.log(`instance ${instance} listening on :3000`);
});
