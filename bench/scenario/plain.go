package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Plain runs a Node program with no process manager, in a process group
// of its own, for the throughput baselines: Node's cluster module
// (bench/apps/cluster.js, WORKERS workers round-robin from the primary) or
// one direct process (hello.js binding the port itself). It cannot reload.
type Plain struct {
	// Label is the name in tables ("node cluster", "direct").
	Label string
	// Node is the node binary; Script the program (cluster.js or hello.js).
	Node, Script string
	// Cluster passes n as WORKERS; otherwise one process is started
	// whatever n is.
	Cluster bool
	// Setsid starts it in a session of its own, as a daemon's children
	// are (and so, with the kernel's scheduler autogroups, in a CPU
	// group apart from the load client); otherwise in a process group of
	// its own within the caller's session.
	Setsid bool

	cmd  *exec.Cmd
	done chan struct{}
}

// Name implements Manager.
func (p *Plain) Name() string { return p.Label }

// Start implements Manager; app is ignored but for its name.
func (p *Plain) Start(ctx context.Context, app App, n, port int) error {
	if !p.Cluster {
		n = 1
	}
	p.cmd = exec.Command(p.Node, p.Script)
	p.cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "WORKERS="+strconv.Itoa(n), "KEEL_INSTANCE=0")
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !p.Setsid, Setsid: p.Setsid}
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	return WaitServing(ctx, URL(port), n, StartTimeout)
}

// Reload implements Manager: not supported.
func (p *Plain) Reload(context.Context) error {
	return fmt.Errorf("%s cannot reload", p.Label)
}

// Pids implements Manager: the process (the primary, for the cluster).
func (p *Plain) Pids(context.Context) ([]int, error) {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil, errors.New("not started")
	}
	return []int{p.cmd.Process.Pid}, nil
}

// Close implements Manager: SIGTERM to the group, SIGKILL after 5 s.
func (p *Plain) Close() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	var err error
	select {
	case <-p.done:
	case <-t.C:
		err = fmt.Errorf("%s did not stop within 5s of SIGTERM; SIGKILLed", p.Label)
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Workers of a primary that died first: the group outlives it.
	syscall.Kill(-pgid, syscall.SIGKILL)
	return err
}

// ServerCPU is the CPU time used so far by the live processes of the
// group (the primary and its workers).
func (p *Plain) ServerCPU() time.Duration {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return ProcsCPU(GroupPids(p.cmd.Process.Pid))
}
