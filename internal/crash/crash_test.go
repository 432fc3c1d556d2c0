package crash

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keel-run/keel/internal/spec"
)

// The test binary doubles as the crashing Go programs: TestMain runs the
// helper named by helperEnv instead of the tests.
const helperEnv = "KEEL_CRASH_TEST_HELPER"

var helpers = map[string]func(){
	"go-goroutine-panic": helperGoroutinePanic,
	"go-nil-map":         helperNilMap,
	"block":              helperBlock,
	"hang":               helperHang,
}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "no helper %q\n", name)
			os.Exit(100)
		}
		h()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// helperGoroutinePanic parks a pid-dependent number of goroutines (so the
// crashing goroutine's id changes between runs), then indexes out of
// range, by a pid-dependent index, in a goroutine of its own.
func helperGoroutinePanic() {
	block := make(chan struct{})
	for range 1 + os.Getpid()%7 {
		go func() { <-block }()
	}
	fmt.Fprintf(os.Stderr, "worker pool of pid %d starting at %s\n", os.Getpid(), time.Now().Format(time.RFC3339Nano))
	done := make(chan struct{})
	go crashWorker(done, 3+os.Getpid()%5)
	<-done // never closed: the worker's panic ends the process
}

// crashWorker must not signal done in a defer: deferred calls run while
// the panic unwinds, and main would exit 0 before the runtime prints it.
func crashWorker(done chan<- struct{}, i int) {
	fmt.Println(lookup([]int{1, 2, 3}, i))
	close(done)
}

//go:noinline
func lookup(s []int, i int) int { return s[i] }

// helperNilMap is a different crash: a write to a nil map, in a goroutine.
func helperNilMap() {
	done := make(chan struct{})
	go func() {
		var m map[string]int
		m["k"] = os.Getpid()
		close(done)
	}()
	<-done
}

// helperBlock says it is ready and waits to be killed.
func helperBlock() {
	fmt.Fprintf(os.Stderr, "serving as pid %d\n", os.Getpid())
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// helperCmd runs the test binary as helper name.
func helperCmd(ctx context.Context, t *testing.T, name string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name, "GOTRACEBACK=single")
	return cmd
}

// run is one finished child: what it wrote, how it ended.
type run struct {
	stderr, stdout []byte
	exit           spec.Exit
	pid            int
}

// runChild runs cmd to its end and returns its output and exit.
func runChild(t *testing.T, cmd *exec.Cmd) run {
	t.Helper()
	var stderr, stdout bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stdout
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %s: %v", cmd, err)
	}
	return run{stderr: stderr.Bytes(), stdout: stdout.Bytes(), exit: exitOf(t, cmd.ProcessState), pid: cmd.ProcessState.Pid()}
}

func exitOf(t *testing.T, ps *os.ProcessState) spec.Exit {
	t.Helper()
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		t.Fatalf("no wait status in %v", ps)
	}
	if ws.Signaled() {
		return spec.ExitSignal(spec.SignalName(ws.Signal()), time.Now())
	}
	return spec.ExitCode(ws.ExitStatus(), time.Now())
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// crashCase is a real crashing program and what Parse must make of it.
type crashCase struct {
	name    string
	needs   string // a binary that must be on PATH, or ""
	run     func(t *testing.T, i int) run
	kind    Kind
	title   *regexp.Regexp
	topFunc string // TopFrame().Function; "" for no frames
	topFile string // base name of TopFrame().File
	exit    string // the child's spec.Exit, as a String
}

// script writes src to a new temp dir as name and returns its path, so
// that every run of a script has a different path.
func script(t *testing.T, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func nodeCase(name, src string, kind Kind, title, topFunc string) crashCase {
	return crashCase{
		name: name, needs: "node", exit: "code 1", kind: kind, title: regexp.MustCompile(title), topFunc: topFunc, topFile: "app.js",
		run: func(t *testing.T, i int) run {
			return runChild(t, exec.CommandContext(testContext(t), "node", script(t, "app.js", src)))
		},
	}
}

func pythonCase(name, src string, title, topFunc string) crashCase {
	return crashCase{
		name: name, needs: "python3", exit: "code 1", kind: KindPython, title: regexp.MustCompile(title), topFunc: topFunc, topFile: "app.py",
		run: func(t *testing.T, i int) run {
			return runChild(t, exec.CommandContext(testContext(t), "python3", script(t, "app.py", src)))
		},
	}
}

func goCase(name, helper, title, topFunc string) crashCase {
	return crashCase{
		name: name, exit: "code 2", kind: KindGoPanic, title: regexp.MustCompile(title), topFunc: topFunc, topFile: "crash_test.go",
		run: func(t *testing.T, i int) run {
			return runChild(t, helperCmd(testContext(t), t, helper))
		},
	}
}

// Each language has a crash A, and a crash B that must group apart from A.
var crashCases = map[string][2]crashCase{
	"go": {
		goCase("goroutine-index", "go-goroutine-panic",
			`^panic: runtime error: index out of range \[[3-7]\] with length 3$`,
			"github.com/keel-run/keel/internal/crash.lookup"),
		goCase("goroutine-nil-map", "go-nil-map",
			`^panic: assignment to entry in nil map$`,
			"github.com/keel-run/keel/internal/crash.helperNilMap.func1"),
	},
	"node-exception": {
		nodeCase("timeout-throw", "setTimeout(() => { throw new Error('boom ' + Date.now()) })\n",
			KindNodeException, `^Error: boom \d{13}$`, "Timeout._onTimeout"),
		nodeCase("type-error", "function getName(user) { return user.profile.name }\nsetTimeout(() => getName({ id: Date.now() }))\n",
			KindNodeException, `^TypeError: Cannot read properties of undefined \(reading 'name'\)$`, "getName"),
	},
	"node-rejection": {
		nodeCase("async-throw", "async function fetchUser(id) {\n  await null\n  throw new Error('user ' + id + ' not found at ' + Date.now())\n}\nfetchUser(process.pid)\n",
			KindNodeRejection, `^Error: user \d+ not found at \d{13}$`, "fetchUser"),
		nodeCase("non-error", "Promise.reject('lost connection to 127.0.0.1:' + (40000 + process.pid % 1000))\n",
			KindNodeRejection, `^UnhandledPromiseRejection: the promise rejected with the reason "lost connection to 127\.0\.0\.1:\d+"\.$`, ""),
	},
	"python": {
		pythonCase("file-not-found", "import os, tempfile\n\ndef load_config(path):\n    raise FileNotFoundError('config for pid %d not found in %s' % (os.getpid(), path))\n\ndef main():\n    load_config(tempfile.mkdtemp())\n\nmain()\n",
			`^FileNotFoundError: config for pid \d+ not found in /\S+$`, "load_config"),
		pythonCase("key-error", "import os\n\ndef lookup(d):\n    return d['user-%d' % os.getpid()]\n\nlookup({})\n",
			`^KeyError: 'user-\d+'$`, "lookup"),
	},
	"signal": {
		{
			name: "sigsegv", exit: "signal SIGSEGV", kind: KindSignal, title: regexp.MustCompile(`^killed by SIGSEGV \(segmentation fault\)$`),
			run: func(t *testing.T, i int) run {
				// A shell that segfaults itself: a real death by SIGSEGV.
				return runChild(t, exec.CommandContext(testContext(t), "/bin/sh", "-c", `echo "worker $$ at $(date +%s%N)" >&2; kill -SEGV $$`))
			},
		},
		{
			name: "sigkill", exit: "signal SIGKILL", kind: KindSignal, title: regexp.MustCompile(`^killed by SIGKILL$`),
			run: func(t *testing.T, i int) run {
				cmd := helperCmd(testContext(t), t, "block")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				defer stdin.Close()
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				line, err := bufio.NewReader(stdout).ReadString('\n')
				if err != nil || line != "ready\n" {
					t.Fatalf("helper said %q, %v", line, err)
				}
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = cmd.Wait()
				return run{stderr: stderr.Bytes(), stdout: []byte(line), exit: exitOf(t, cmd.ProcessState), pid: cmd.ProcessState.Pid()}
			},
		},
	},
}

// TestRealCrashes runs each crash five times and another crash twice:
// every run parses to the right kind, title and top frame; the five are
// one group of count 5 across two instances, the other crash is another.
func TestRealCrashes(t *testing.T) {
	for lang, cases := range crashCases {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			for _, c := range cases {
				if c.needs != "" {
					if _, err := exec.LookPath(c.needs); err != nil {
						t.Skipf("%s is not installed: skipping the %s crash tests", c.needs, lang)
					}
				}
			}
			book := NewBook(Limits{})
			const app = "api"
			a, b := cases[0], cases[1]
			var first Group
			pids := map[int]bool{}
			for i := range 5 {
				r := a.run(t, i)
				rep := checkRun(t, a, r)
				g, isNew := book.Add(app, i%2, r.pid, rep, r.exit)
				if isNew != (i == 0) {
					t.Fatalf("%s run %d: isNew = %v", a.name, i, isNew)
				}
				if i == 0 {
					first = g
				} else if g.ID != first.ID || g.Signature != first.Signature {
					t.Fatalf("%s run %d: group %s (signature %s), want %s (%s); stack:\n%s\nfirst:\n%s",
						a.name, i, g.ID, g.Signature, first.ID, first.Signature, g.LastStack, first.LastStack)
				}
				pids[r.pid] = true
			}
			if len(pids) != 5 {
				t.Errorf("five runs had %d distinct pids", len(pids))
			}
			for i := range 2 {
				r := b.run(t, i)
				rep := checkRun(t, b, r)
				g, isNew := book.Add(app, 0, r.pid, rep, r.exit)
				if g.ID == first.ID || g.Signature == first.Signature {
					t.Fatalf("%s grouped with %s:\n%s", b.name, a.name, g.LastStack)
				}
				if isNew != (i == 0) {
					t.Fatalf("%s run %d: isNew = %v", b.name, i, isNew)
				}
			}
			gs := book.Groups(app)
			if len(gs) != 2 {
				t.Fatalf("%d groups, want 2: %+v", len(gs), gs)
			}
			counts := map[string]int{gs[0].ID: gs[0].Count, gs[1].ID: gs[1].Count}
			if counts[first.ID] != 5 {
				t.Errorf("group of %s has count %d, want 5", a.name, counts[first.ID])
			}
			ga, _ := book.Get(first.ID)
			if len(ga.Exits) != 5 || ga.Kind != a.kind || !a.title.MatchString(ga.Title) {
				t.Errorf("group %+v", ga)
			}
			instances := map[int]int{}
			for _, e := range ga.Exits {
				instances[e.Instance]++
				if !pids[e.Pid] {
					t.Errorf("exit of unknown pid %d", e.Pid)
				}
			}
			if instances[0] != 3 || instances[1] != 2 {
				t.Errorf("exits by instance %v, want 3 of 0 and 2 of 1", instances)
			}
			if gs[0].Title == "" || gs[1].LastStack == "" && gs[1].Kind != KindSignal {
				t.Errorf("empty group fields: %+v", gs)
			}
		})
	}
}

// checkRun parses one run and checks it against c.
func checkRun(t *testing.T, c crashCase, r run) Report {
	t.Helper()
	if r.exit.String() != c.exit {
		t.Fatalf("%s: the child ended with %s, want %s; stderr:\n%s", c.name, r.exit, c.exit, r.stderr)
	}
	rep := Parse(r.stderr, r.stdout, r.exit)
	if rep.Kind != c.kind || !c.title.MatchString(rep.Title) {
		t.Fatalf("%s: kind %q title %q, want %q and /%s/; stderr:\n%s", c.name, rep.Kind, rep.Title, c.kind, c.title, r.stderr)
	}
	top, ok := rep.TopFrame()
	if c.topFunc == "" {
		if c.kind == KindSignal && ok {
			t.Fatalf("%s: a signal with frames: %+v", c.name, rep.Frames)
		}
		return rep
	}
	if !ok || top.Function != c.topFunc || filepath.Base(top.File) != c.topFile || top.Line <= 0 || !top.InApp {
		t.Fatalf("%s: top frame %+v, want %s in %s; frames %+v; stderr:\n%s", c.name, top, c.topFunc, c.topFile, rep.Frames, r.stderr)
	}
	if rep.Text == "" || !bytes.Contains(r.stderr, []byte(rep.Text)) {
		t.Fatalf("%s: text %q is not a cut of stderr:\n%s", c.name, rep.Text, r.stderr)
	}
	return rep
}
