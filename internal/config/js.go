package config

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// jsTimeout bounds how long node may take to evaluate a config file.
const jsTimeout = 10 * time.Second

// jsLoader runs in node: it imports the file named by KEEL_CONFIG_FILE (a
// CommonJS or ES module), and writes {"ok": exports} or {"error", "stack"}
// as JSON to fd 3, so that nothing the file prints can mix with it. It then
// exits, whatever timers the file left running.
const jsLoader = `
const fs = require('fs');
const url = require('url');
function done(v) {
  let s;
  try { s = JSON.stringify(v); } catch (e) { s = JSON.stringify({error: 'cannot turn the exports into JSON: ' + String(e && e.message || e), stack: ''}); }
  fs.writeSync(3, s === undefined ? '{"ok":null}' : s);
  process.exit(0);
}
function fail(e) { done({error: String(e), stack: String(e && e.stack || '')}); }
import(url.pathToFileURL(process.env.KEEL_CONFIG_FILE).href).then((m) => {
  const c = (m && 'default' in m) ? m.default : m;
  done({ok: c === undefined ? null : c});
}, fail);
`

// jsResult is what jsLoader writes.
type jsResult struct {
	OK    json.RawMessage `json:"ok"`
	Error *string         `json:"error"`
	Stack string          `json:"stack"`
}

// evalJS evaluates a JavaScript config file (absolute path) with node and
// returns its exports as a parse tree without lines. Errors say what to do:
// node missing, the file throwing (with its line when the stack names it),
// node taking too long.
func evalJS(path string, timeout time.Duration) (*treeNode, error) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return nil, errors.New("reading a JavaScript config needs node, and node is not in PATH: install Node.js, or write the config as keel.yaml")
	}
	out, err := os.CreateTemp("", "keel-config-*.json")
	if err != nil {
		return nil, fmt.Errorf("evaluating with node: %w", err)
	}
	defer os.Remove(out.Name())
	defer out.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "-e", jsLoader)
	cmd.Env = append(os.Environ(), "KEEL_CONFIG_FILE="+path)
	cmd.ExtraFiles = []*os.File{out}
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 64 << 10}
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("node did not finish evaluating it within %s", timeout)
	}
	data, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, fmt.Errorf("evaluating with node: %w", err)
	}
	if len(data) == 0 {
		msg := lastLine(stderr.String())
		if msg == "" && runErr != nil {
			msg = runErr.Error()
		}
		return nil, fmt.Errorf("node failed evaluating it: %s", msg)
	}
	var res jsResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("evaluating with node: reading its output: %w", err)
	}
	if res.Error != nil {
		return nil, &posError{line: stackLine(res.Stack, path), err: fmt.Errorf("evaluating it with node: %s", firstLine(*res.Error))}
	}
	root, err := parseJSON(res.OK)
	if err != nil {
		return nil, fmt.Errorf("evaluating with node: reading its output: %w", err)
	}
	clearLines(root)
	return root, nil
}

// clearLines drops the lines of node's JSON output: they are not the file's.
func clearLines(n *treeNode) {
	n.line = 0
	for _, it := range n.items {
		clearLines(it)
	}
	for i := range n.pairs {
		n.pairs[i].line = 0
		clearLines(n.pairs[i].val)
	}
}

// stackLine finds the line of path that a JavaScript error's stack names
// ("/dir/ecosystem.config.js:3" or "…:3:9"), or 0.
func stackLine(stack, path string) int {
	re := regexp.MustCompile(regexp.QuoteMeta(path) + `:(\d+)`)
	if m := re.FindStringSubmatch(stack); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// limitedWriter keeps the first n bytes written to it and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
