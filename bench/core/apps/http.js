// A Node HTTP server on a port of its own (0: any free one), on loopback.
require('http')
  .createServer((req, res) => res.end('ok\n'))
  .listen(0, '127.0.0.1');
