package proc

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseOnExecAbove2 marks every descriptor above stderr close-on-exec, so
// that what this process inherited (a shell's stray descriptors) goes no
// further than this process: not to the daemon the CLI starts, nor to the
// keepers and apps the daemon starts. Descriptors passed on on purpose go
// through exec.Cmd.ExtraFiles, which clears the flag on the child's copy.
func CloseOnExecAbove2() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Kernels before 5.11: one descriptor at a time.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
