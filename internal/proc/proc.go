package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ExecArg is the first argument that makes the keel binary run ExecMain.
const ExecArg = "__exec"

// execTimeout bounds how long Start waits for the pre-exec step to exec
// the real program.
const execTimeout = 10 * time.Second

// Options says what to run and how. The zero value of each field is usable
// except Argv.
type Options struct {
	// Argv is the command line. Argv[0] is looked up in the PATH of Env —
	// not of the calling process — unless it contains a slash; a relative
	// path is relative to Dir.
	Argv []string
	// Dir is the working directory; "" keeps the caller's.
	Dir string
	// Env is the whole environment of the process, as KEY=VALUE. Any
	// LISTEN_FDS, LISTEN_PID or LISTEN_FDNAMES in it are dropped; they are
	// set from ListenNames.
	Env []string
	// Stdin, Stdout and Stderr are the process's fds 0, 1 and 2; nil means
	// /dev/null. The caller keeps ownership and should close its copies
	// after Start so that pipes see EOF when the process ends.
	Stdin, Stdout, Stderr *os.File
	// ExtraFiles become fds 3, 4, … in order. The caller keeps ownership.
	ExtraFiles []*os.File
	// ListenNames names the first len(ListenNames) ExtraFiles as listening
	// sockets: the process gets LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID.
	// A name is printable ASCII without ':' (systemd's rule), at most 255
	// bytes; "" is written as "unknown".
	ListenNames []string
	// Helper is the keel executable, run as "Helper __exec …" to set
	// LISTEN_PID before the real exec (see ExecMain). Required when
	// ListenNames is not empty, unused otherwise.
	Helper string
	// KillGroupOnExit makes the exit of the leader SIGKILL whatever is left
	// of its process group, so no descendant outlives it (systemd's
	// KillMode=control-group for what stayed in the group).
	KillGroupOnExit bool
	// KillDescendantsOnExit makes the exit of the leader also SIGKILL
	// every other descendant of the calling process (KillDescendants):
	// children that left the group (setsid) and, when the caller is a
	// child subreaper, the orphans of the app's tree (a double fork). The
	// caller must have no other children it wants to keep — unless Mark
	// is set.
	KillDescendantsOnExit bool
	// Mark, a KEY=VALUE entry of Env unique to this process, narrows
	// KillDescendantsOnExit to the caller's children whose environment
	// holds it, with all their descendants (KillMarked): the orphans of
	// this process's tree, and not those of the caller's other children.
	// A descendant that dropped the entry from its environment is missed.
	Mark string
	// Leader, with Mark, names the caller's children that lead its other
	// trees (see KillMarked): they are never taken for this one's orphans,
	// and cost no read of their environment.
	Leader func(pid int) bool
	// StartCmd starts the command and returns its Wait; nil means
	// cmd.Start and cmd.Wait. (A caller that reaps orphans must know
	// which children are not orphans before they can exit.)
	StartCmd func(*exec.Cmd) (wait func() error, err error)
	// Exits, when set, tells of the exit instead of a goroutine of the
	// Process's own waiting on a pidfd: one watcher serves every child of
	// a keeper process.
	Exits *ExitWatcher
	// Cgroup, when set, is where the process is born (CLONE_INTO_CGROUP),
	// and with it everything it starts; the leader's exit then ends the
	// whole group with cgroup.kill and waits until it is empty, whatever
	// its members did to leave the process group, the session or the
	// caller's tree. The caller creates and removes the group.
	Cgroup Cgroup
}

// Cgroup is a cgroup v2 group for Options.Cgroup (internal/cgroup.Group
// is one; proc stays a leaf package).
type Cgroup interface {
	// Open opens the group's directory, for CLONE_INTO_CGROUP.
	Open() (*os.File, error)
	Populated() (bool, error)
	// Kill SIGKILLs every member (cgroup.kill).
	Kill() error
	WaitEmpty(ctx context.Context) error
}

// Exit is how a process ended.
type Exit struct {
	// Code is the exit code, or -1 when a signal ended the process or the
	// status could not be had (the process was reaped by someone else).
	Code int
	// Signal is the signal that ended the process; 0 if it exited by itself.
	Signal syscall.Signal
	// At is when the exit was noticed.
	At time.Time
}

func (e Exit) String() string {
	if e.Signal != 0 {
		return "signal " + e.Signal.String()
	}
	return "code " + strconv.Itoa(e.Code)
}

// Process is one started process, the leader of its own process group.
// Its methods are safe for concurrent use.
type Process struct {
	pid       int
	started   time.Time
	ident     Identity
	cmd       *exec.Cmd
	killGroup bool
	killTree  bool
	mark      string
	leader    func(pid int) bool
	waitCmd   func() error
	cgroup    Cgroup
	done      chan struct{}
	exit      Exit // written once before done is closed

	// mu guards exited and is held while signalling, so that no signal is
	// sent after the leader's pid was released by the reap.
	mu     sync.Mutex
	exited bool
}

// Start starts the process described by o. It returns an error, and
// leaves nothing running, when Argv[0] cannot be found or executed, Dir is
// not a directory, or the listen names are invalid.
func Start(o Options) (*Process, error) {
	if len(o.Argv) == 0 || o.Argv[0] == "" {
		return nil, errors.New("starting process: empty command line")
	}
	if len(o.ListenNames) > len(o.ExtraFiles) {
		return nil, fmt.Errorf("starting %s: %d listen names for %d extra files", o.Argv[0], len(o.ListenNames), len(o.ExtraFiles))
	}
	env := make([]string, 0, len(o.Env)+2)
	for _, kv := range o.Env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LISTEN_FDS" || k == "LISTEN_PID" || k == "LISTEN_FDNAMES" {
			continue
		}
		env = append(env, kv)
	}
	if n := len(o.ListenNames); n > 0 {
		if o.Helper == "" {
			return nil, fmt.Errorf("starting %s: listen fds need the keel executable as Helper", o.Argv[0])
		}
		names := make([]string, n)
		for i, name := range o.ListenNames {
			if name == "" {
				name = "unknown"
			}
			if err := checkFdName(name); err != nil {
				return nil, fmt.Errorf("starting %s: %w", o.Argv[0], err)
			}
			names[i] = name
		}
		env = append(env, "LISTEN_FDS="+strconv.Itoa(n), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	if o.Dir != "" {
		fi, err := os.Stat(o.Dir)
		if err != nil {
			return nil, fmt.Errorf("starting %s: working directory: %w", o.Argv[0], err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("starting %s: working directory %s is not a directory", o.Argv[0], o.Dir)
		}
	}
	path, err := LookPath(o.Argv[0], getenv(env, "PATH"), o.Dir)
	if err != nil {
		return nil, err
	}

	cmd := &exec.Cmd{
		Path:        path,
		Args:        o.Argv,
		Env:         env,
		Dir:         o.Dir,
		ExtraFiles:  o.ExtraFiles,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if o.Cgroup != nil {
		fd, err := o.Cgroup.Open()
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", o.Argv[0], err)
		}
		// Start has forked once it returns, so the fd can go then.
		defer fd.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(fd.Fd())
	}
	// exec.Cmd wants untyped nils for /dev/null.
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stderr != nil {
		cmd.Stderr = o.Stderr
	}

	var status, statusW *os.File
	if len(o.ListenNames) > 0 {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", o.Argv[0], err)
		}
		defer r.Close()
		status, statusW = r, w
		fd := 3 + len(o.ExtraFiles)
		cmd.Path = o.Helper
		cmd.Args = append([]string{o.Helper, ExecArg, strconv.Itoa(fd), path}, o.Argv...)
		cmd.ExtraFiles = append(append([]*os.File(nil), o.ExtraFiles...), w)
	}
	startCmd := o.StartCmd
	if startCmd == nil {
		startCmd = func(c *exec.Cmd) (func() error, error) { return c.Wait, c.Start() }
	}
	waitCmd, err := startCmd(cmd)
	if statusW != nil {
		statusW.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", o.Argv[0], err)
	}
	// Wait needs none of it; a caller of many processes would keep a copy
	// of the environment for each.
	cmd.Env, cmd.ExtraFiles = nil, nil

	p := &Process{
		pid:       cmd.Process.Pid,
		started:   time.Now(),
		cmd:       cmd,
		killGroup: o.KillGroupOnExit,
		killTree:  o.KillDescendantsOnExit,
		mark:      o.Mark,
		leader:    o.Leader,
		waitCmd:   waitCmd,
		cgroup:    o.Cgroup,
		done:      make(chan struct{}),
	}
	// Nobody has waited for the child yet, so /proc still has it (as a
	// zombie at worst) and this cannot fail for want of a process.
	p.ident, _ = Identify(p.pid)
	if o.Exits != nil {
		o.Exits.Watch(p.pid, func() { go p.wait(false) })
	} else {
		go p.wait(true)
	}

	if status != nil {
		if err := readExecStatus(status); err != nil {
			_ = p.Signal(syscall.SIGKILL)
			<-p.done
			return nil, fmt.Errorf("starting %s: %w", o.Argv[0], err)
		}
	}
	return p, nil
}

// readExecStatus waits for the pre-exec step: EOF means the exec
// succeeded; anything written is the reason it did not.
func readExecStatus(r *os.File) error {
	if err := r.SetReadDeadline(time.Now().Add(execTimeout)); err != nil {
		return fmt.Errorf("waiting for exec: %w", err)
	}
	msg, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("waiting for exec: %w", err)
	}
	if len(msg) > 0 {
		return errors.New(string(msg))
	}
	return nil
}

// wait is the one goroutine that waits for the process.
// It starts once the process has exited, or awaits that first.
func (p *Process) wait(await bool) {
	// Learn of the exit without reaping: the zombie keeps the pid, and
	// so the group id, from being reused while we signal the group.
	if await {
		awaitExit(p.pid)
	}
	at := time.Now()
	p.mu.Lock()
	if p.killGroup {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
	}
	switch {
	case p.killTree && p.mark != "":
		KillMarked(p.pid, p.mark, p.leader)
	case p.killTree:
		KillDescendants(p.pid)
	}
	if p.cgroup != nil {
		p.killCgroup()
	}
	p.exited = true
	p.mu.Unlock()

	err := p.waitCmd()
	p.exit = exitOf(p.cmd.ProcessState, err, at)
	close(p.done)
}

// cgroupEmptyTimeout bounds the wait for a killed cgroup to empty: the
// kernel delivers the SIGKILLs; only a process stuck in the kernel (D
// state, a hung NFS mount) holds it up.
const cgroupEmptyTimeout = 10 * time.Second

// killCgroup ends what is left in the process's cgroup, and waits for it.
func (p *Process) killCgroup() {
	// An empty group needs no kill (and its members cannot come back:
	// only a member forks into it).
	if pop, err := p.cgroup.Populated(); err == nil && !pop {
		return
	}
	if err := p.cgroup.Kill(); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cgroupEmptyTimeout)
	defer cancel()
	_ = p.cgroup.WaitEmpty(ctx)
}

func exitOf(st *os.ProcessState, err error, at time.Time) Exit {
	if st == nil {
		// Reaped by someone else (ECHILD): the status is lost.
		return Exit{Code: -1, At: at}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return Exit{Code: -1, Signal: ws.Signal(), At: at}
	}
	return Exit{Code: st.ExitCode(), At: at}
}

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Identity is the process's pid and start time, read before it could
// have been reaped; use it to find the process again without a parent.
func (p *Process) Identity() Identity { return p.ident }

// Started is when Start started the process.
func (p *Process) Started() time.Time { return p.started }

// Done is closed once the process has exited and was reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit blocks until the process has exited and returns how.
func (p *Process) Exit() Exit {
	<-p.done
	return p.exit
}

// Signal sends sig to the whole process group. It returns
// os.ErrProcessDone once the leader has exited, and wraps the kill error
// otherwise.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return os.ErrProcessDone
	}
	if err := unix.Kill(-p.pid, sig); err != nil {
		return fmt.Errorf("signalling process group %d: %w", p.pid, err)
	}
	return nil
}

func checkFdName(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("listen fd name %q is longer than 255 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e || c == ':' {
			return fmt.Errorf("listen fd name %q: only printable ASCII without ':' or spaces is allowed", name)
		}
	}
	return nil
}

// getenv returns the last value of key in env.
func getenv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// awaitExit returns once the child pid has exited, leaving it unreaped.
// It waits on a pidfd through the runtime's poller, so a keeper waiting
// for a thousand processes does not hold a thousand threads blocked in
// waitid; without pidfds (Linux before 5.3) it blocks in waitid.
func awaitExit(pid int) {
	var info unix.Siginfo
	if fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK); err == nil {
		f := os.NewFile(uintptr(fd), "pidfd")
		defer f.Close()
		if rc, err := f.SyscallConn(); err == nil {
			exited := false
			// The pidfd turns readable when the process exits.
			err := rc.Read(func(uintptr) bool {
				exited = hasExited(pid)
				return exited
			})
			if err == nil && exited {
				return
			}
		}
	}
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// siginfoPid is si_pid of a waitid result: 0 when no child had changed
// state (WNOHANG).
func siginfoPid(info *unix.Siginfo) int32 {
	// si_signo, si_errno, si_code (3 × int32), then on 64-bit a 4-byte
	// hole before the union, whose first member for SIGCHLD is si_pid.
	b := (*[32]byte)(unsafe.Pointer(info))
	off := 12
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return *(*int32)(unsafe.Pointer(&b[off]))
}
