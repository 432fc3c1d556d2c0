package procs

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const helperVar = "PROCS_TEST_HELPER"

// The helper limits itself to two Ps, then says what it runs on and what
// its children would get.
func TestMain(m *testing.M) {
	if os.Getenv(helperVar) == "limit" {
		Limit(2)
		v, set := os.LookupEnv("GOMAXPROCS")
		_, marked := os.LookupEnv(AppVar)
		// What the process image started with: the exec's environment.
		b, _ := os.ReadFile("/proc/self/environ")
		started := "none"
		for _, kv := range strings.Split(string(b), "\x00") {
			if n, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
				started = n
			}
		}
		fmt.Printf("procs=%d started=%s gomaxprocs=%q set=%v marked=%v\n", runtime.GOMAXPROCS(0), started, v, set, marked)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A process on more Ps than its limit starts itself again on the limit,
// and what it starts sees the GOMAXPROCS it was given, or none.
func TestLimitStartsItselfAgain(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string // "": GOMAXPROCS unset
		want string
	}{
		{"GOMAXPROCS=8", `procs=2 started=2 gomaxprocs="8" set=true marked=false`},
		{"GOMAXPROCS=1", `procs=1 started=1 gomaxprocs="1" set=true marked=false`},
		{"", `gomaxprocs="" set=false marked=false`},
	} {
		t.Run(tc.env, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
				return strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, AppVar+"=")
			}), helperVar+"=limit")
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			got := strings.TrimSpace(string(out))
			want := tc.want
			if tc.env == "" {
				// Unset, Go runs on every CPU: the limit applies above 2.
				started := "none"
				if runtime.NumCPU() > 2 {
					started = "2"
				}
				want = fmt.Sprintf("procs=%d started=%s %s", min(runtime.NumCPU(), 2), started, tc.want)
			}
			if got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

// Env sets the limit and keeps what the apps are to get: the GOMAXPROCS
// a Limit before kept, else the environment's own, else none.
func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"A=1", "GOMAXPROCS=8"}, []string{"A=1", "GOMAXPROCS=1", AppVar + "==8"}},
		{[]string{"A=1"}, []string{"A=1", "GOMAXPROCS=1", AppVar + "="}},
		{[]string{"GOMAXPROCS=2", AppVar + "==8"}, []string{"GOMAXPROCS=1", AppVar + "==8"}},
		{[]string{AppVar + "=", "GOMAXPROCS=2"}, []string{"GOMAXPROCS=1", AppVar + "="}},
	} {
		if got := Env(tc.in, 1); !slices.Equal(got, tc.want) {
			t.Errorf("Env(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
