// An unmodified Express app (scenario b): nothing keel-specific. Under keel
// the preload gives app.listen(3000) keel's shared socket and closes the
// server gracefully on SIGTERM.
'use strict';
const express = require('express');
const app = express();
const id = process.env.KEEL_INSTANCE || process.env.NODE_APP_INSTANCE || String(process.pid);

app.get('/', (req, res) => {
  res.set('X-Keel-Instance', id);
  res.send('hello\n');
});

app.listen(Number(process.env.PORT || 3000), () => {
  console.log('listening');
});
