// An unmodified Express app with two bugs (the crash scenario): /throw
// throws in a timer, outside any handler Express could catch; /reject
// leaves a rejected promise unhandled. Either ends a Node process. Nothing
// keel-specific.
'use strict';
const express = require('express');
const app = express();
const id = process.env.KEEL_INSTANCE || process.env.NODE_APP_INSTANCE || String(process.pid);

async function findWidget(name) {
  await null;
  throw new Error(`no widget named ${name}`);
}

app.get('/', (req, res) => {
  res.set('X-Keel-Instance', id);
  res.send('hello\n');
});

app.get('/throw', (req, res) => {
  setTimeout(() => {
    const widget = undefined;
    res.send(widget.name);
  }, 1);
});

app.get('/reject', (req, res) => {
  findWidget('sprocket').then((w) => res.send(w));
});

app.listen(Number(process.env.PORT || 3000), () => {
  console.log('listening');
});
