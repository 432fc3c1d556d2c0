package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LeafName is the group this process moves into inside its delegated
// subtree (systemd's DelegateSubgroup= can put it there from the start).
const LeafName = "daemon"

// Delegate prepares this process's delegated cgroup v2 subtree for a
// group per instance and returns the directory they go under. cgroup v2
// hands controllers to the children of a group only while the group
// itself holds no process, so this process moves into LeafName (unless
// it already runs there, as with DelegateSubgroup=daemon; then the parent
// is the subtree) before memory is enabled in the subtree's
// subtree_control. Call it before starting any child, and only when Probe
// says the subtree is delegated.
func Delegate() (string, error) {
	own, err := Own()
	if err != nil {
		return "", err
	}
	root := own
	if filepath.Base(own) == LeafName && writableWithMemory(filepath.Dir(own)) {
		root = filepath.Dir(own)
	} else {
		leaf, err := Create(own, LeafName)
		if err != nil {
			return "", err
		}
		pid := strconv.Itoa(os.Getpid())
		if err := os.WriteFile(filepath.Join(leaf.Dir(), "cgroup.procs"), []byte(pid), 0); err != nil {
			return "", fmt.Errorf("moving keel into cgroup %s: %w", leaf.Dir(), err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		return "", fmt.Errorf("enabling the memory controller in cgroup %s: %w", root, err)
	}
	return root, nil
}

func writableWithMemory(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	return err == nil && slices.Contains(strings.Fields(string(b)), "memory") && unix.Access(dir, unix.W_OK) == nil
}
