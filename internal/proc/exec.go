package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExecMain is the pre-exec step, run in the new process as
// "keel __exec <status-fd> <path> <argv…>"; args is what follows
// "__exec". It sets LISTEN_PID to its own pid, makes sure the LISTEN_FDS
// descriptors survive the exec and the status fd does not, and execs path
// with argv. It returns only when that fails: it writes the reason to the
// status fd and returns 127 (2 for a malformed command line), the code
// the caller should exit with.
func ExecMain(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "keel __exec: usage: keel __exec <status-fd> <path> <argv…>")
		return 2
	}
	fd, err := strconv.Atoi(args[0])
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "keel __exec: bad status fd %q\n", args[0])
		return 2
	}
	path, argv := args[1], args[2:]
	unix.CloseOnExec(fd)

	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	for i := 0; i < n; i++ {
		if _, err := unix.FcntlInt(uintptr(3+i), unix.F_SETFD, 0); err != nil {
			return fail(fd, fmt.Errorf("keeping listen fd %d open: %w", 3+i, err))
		}
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_PID=") {
			env = append(env, kv)
		}
	}
	if n > 0 {
		env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	}
	err = syscall.Exec(path, argv, env)
	return fail(fd, fmt.Errorf("exec %s: %w", path, err))
}

func fail(fd int, err error) int {
	f := os.NewFile(uintptr(fd), "exec-status")
	if _, werr := f.WriteString(err.Error()); werr != nil {
		fmt.Fprintln(os.Stderr, "keel __exec:", err)
	}
	f.Close()
	return 127
}
