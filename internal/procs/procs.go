// Package procs starts keel's own long-running processes — the daemon and
// the keepers — on few Ps (GOMAXPROCS), while the apps they start get the
// GOMAXPROCS the user gave, or none.
//
// Every P costs memory for the process's life: the P, its allocation
// caches, the GC workers and threads spread across the Ps. The daemon
// and a keeper wait almost always, so on a 64-core box the 64 Ps Go
// gives them by default buy nothing. Measured on 2 cores with
// GOMAXPROCS=64 standing in for 64 cores, 200 instances in 3 apps: the
// daemon used 10.9 MB PSS, and 8.2 MB started on 2 Ps, as on 2 cores;
// lowering GOMAXPROCS once running gave 9.3 MB, for what Go makes for its
// Ps at start stays. A keeper of 20 instances: 7.3 MB with 64 Ps, 3.0 MB
// with 1. So the limit must be in the environment when the process
// starts.
package procs

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// AppVar carries, from a process that Limit started again (or that Env
// made the environment of) to its apps, the GOMAXPROCS the user gave:
// "=value", or "" for none. Limit takes it out of the environment again.
const AppVar = "KEEL_APP_GOMAXPROCS"

// SelfExe names the running binary, for keel's processes that execute
// it again; it works even when the file was replaced by an upgrade or
// removed (`go run`'s temporary binary).
const SelfExe = "/proc/self/exe"

// Limit makes the calling process run on at most n Ps, and leaves in its
// environment the GOMAXPROCS the user gave, for the processes it starts.
// A process whose environment Env made has its limit already; any other
// that would run on more than n Ps execs itself again at once, with the
// same arguments and descriptors, on n (so call Limit before the process
// starts its work: what it did before is done again). Should that exec
// fail, it lowers GOMAXPROCS in place, which frees part of the memory.
func Limit(n int) {
	if v, ok := os.LookupEnv(AppVar); ok {
		os.Unsetenv(AppVar)
		if orig, set := strings.CutPrefix(v, "="); set {
			os.Setenv("GOMAXPROCS", orig)
		} else {
			os.Unsetenv("GOMAXPROCS")
		}
	} else if runtime.GOMAXPROCS(0) > n {
		_ = syscall.Exec(SelfExe, os.Args, Env(os.Environ(), n)) // returns only if it failed
	}
	// Only when needed: setting it stops Go from following a container's
	// CPU limit.
	if runtime.GOMAXPROCS(0) > n {
		runtime.GOMAXPROCS(n)
	}
}

// Env is env for a process of keel's that is to run on n Ps (it calls
// Limit): GOMAXPROCS=n, and what its apps are to get — the GOMAXPROCS a
// Limit before kept, else env's own, or its absence.
func Env(env []string, n int) []string {
	app, kept := "", false
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "GOMAXPROCS":
			if !kept {
				app = "=" + v
			}
		case AppVar:
			app, kept = v, true
		default:
			out = append(out, kv)
		}
	}
	return append(out, "GOMAXPROCS="+strconv.Itoa(n), AppVar+"="+app)
}
