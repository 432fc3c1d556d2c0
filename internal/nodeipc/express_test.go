package nodeipc

import (
	"strconv"
	"syscall"
	"testing"

	"github.com/keel-run/keel/internal/nodeipc/nodetest"
)

// installExpress installs Express from npm into the shared test cache.
func installExpress(t *testing.T) string { return nodetest.InstallExpress(t) }

func TestNodeExpressAppListen(t *testing.T) {
	modules := installExpress(t)
	l := listenTCP(t)
	app := startNode(t, nodeOpts{
		// Unmodified: what an Express user writes.
		script: `
const express = require('express');
const app = express();
app.get('/', (req, res) => res.send('express ' + process.pid));
app.listen(3000, () => console.log('Example app listening on port 3000'));
`,
		env: []string{"NODE_PATH=" + modules},
		// Port 3000 is answered with keel's socket: node never binds it.
		listen: serveOn(3000, l, nil),
	})
	ev := app.event(t, EventListening)
	if !ev.Listening.Keel {
		t.Fatalf("listening %+v, want keel's socket", ev.Listening)
	}
	app.stdout.waitFor(t, "Example app listening on port 3000")
	code, body, _ := httpGet(t, l.LocalAddr().String(), "/")
	if code != 200 || body != "express "+strconv.Itoa(app.cmd.Process.Pid) {
		t.Fatalf("GET = %d %q", code, body)
	}
	app.signal(t, syscall.SIGTERM)
	if code, sig := app.wait(t); code != 0 || sig != 0 {
		t.Fatalf("exit %d %v after SIGTERM, want 0", code, sig)
	}
}
