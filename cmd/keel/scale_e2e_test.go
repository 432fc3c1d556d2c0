package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/poll"
)

// TestManagerMemoryPerApp: keel's own memory (daemon plus keepers, PSS)
// with 200 instances of one app is below what pm2 7.0.4 used on this kind
// of machine for the same (61 MB, bench/README "Scale"), with a generous
// margin, because an app's instances share one keeper process. The test
// runs a keel built without the race detector, whose memory would be
// meaningless; the exact figures come from bench/cmd/scale.
func TestManagerMemoryPerApp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds keel and starts 200 processes")
	}
	bin := filepath.Join(t.TempDir(), "keel")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building keel: %v\n%s", err, out)
	}
	e := newEnv(t)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "KEEL_HOME="+e.home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("keel %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	const n = 200
	run("start", "/bin/sleep", "--name", "s", "-i", strconv.Itoa(n), "--", "1000")
	var online int
	if !poll.Within(90*time.Second, func() bool {
		var l []api.Instance
		if err := jsonUnmarshal(run("ls", "--json"), &l); err != nil {
			t.Fatal(err)
		}
		online = 0
		for _, in := range l {
			if in.Status == "online" {
				online++
			}
		}
		return online == n
	}) {
		t.Fatalf("%d of %d online", online, n)
	}

	var keepers, total int
	for _, pid := range processesOf(e.home) {
		if exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); exe != bin {
			continue // an app
		}
		kb := pss(t, pid)
		total += kb
		if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); bytes.Contains(cmdline, []byte("__keeper")) {
			keepers++
		}
		t.Logf("pid %d: %d kB PSS", pid, kb)
	}
	t.Logf("%d instances: daemon and %d keeper processes, %.1f MB PSS", n, keepers, float64(total)/1024)
	// One keeper for the app.
	if keepers != 1 {
		t.Errorf("%d keeper processes for one app", keepers)
	}
	if limit := 50 << 10; total > limit {
		t.Errorf("keel uses %d kB PSS for %d instances; pm2 used 61 MB here, the limit is %d kB", total, n, limit)
	}
	run("kill")
}

// pss is a process's proportional set size in kB.
func pss(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("smaps_rollup of %d: %q", pid, sc.Text())
			}
			return kb
		}
	}
	t.Fatalf("no Pss in smaps_rollup of %d", pid)
	return 0
}
