// Package cgroup tells whether keel could hold each instance in a cgroup
// v2 of its own: whether this process sits in a cgroup v2 subtree it may
// write to (one delegated to it, as systemd's Delegate=yes gives) with the
// memory controller available.
//
// keel ends an app's descendants with the app through its keeper, a child
// subreaper (see internal/keeper); Probe only reports what the cgroup
// hierarchy offers, so that `keel describe` can say which containment
// runs and why.
package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Probe describes this process's cgroup v2 subtree: delegated is true
// when it is writable and offers the memory controller; why says what is
// missing otherwise (v1 only, read-only, no controllers).
func Probe() (delegated bool, why string) {
	dir, err := Own()
	if err != nil {
		return false, err.Error()
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return false, fmt.Sprintf("cgroup v2 at %s is not readable: %v", dir, err)
	}
	if !slices.Contains(strings.Fields(string(b)), "memory") {
		return false, fmt.Sprintf("cgroup v2 at %s offers no memory controller (controllers: %q)", dir, strings.TrimSpace(string(b)))
	}
	if unix.Access(dir, unix.W_OK) != nil {
		return false, fmt.Sprintf("cgroup v2 at %s is not writable (not delegated; keel startup's unit asks for Delegate=yes)", dir)
	}
	return true, ""
}

// Own is the directory of this process's cgroup v2.
func Own() (string, error) {
	rel, err := ownV2Path("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	mnt, err := v2Mount("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	return filepath.Join(mnt, rel), nil
}

// ownV2Path reads the "0::<path>" line of a /proc/<pid>/cgroup file.
func ownV2Path(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 (only v1 hierarchies in %s)", file)
}

// v2Mount finds where the cgroup2 file system is mounted.
func v2Mount(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options … - fstype source …
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) > 4 {
			return f[4], nil
		}
	}
	return "", fmt.Errorf("no cgroup2 file system is mounted")
}

// Usable checks that dir is a cgroup v2 directory this process may make
// groups in, for a directory an operator named rather than one Probe
// found.
func Usable(dir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("cgroup directory %s: %w", dir, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("cgroup directory %s is not in a cgroup v2 file system", dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("cgroup directory %s is not writable: %w", dir, err)
	}
	return nil
}
