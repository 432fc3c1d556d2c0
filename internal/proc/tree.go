package proc

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Children lists the children of pid: from /proc/<pid>/task/*/children,
// or, where the kernel lacks those files, from the parent field of every
// process's stat.
func Children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/children")
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(dir + "/" + t.Name()); serr == nil {
				return childrenByScan(pid) // no CONFIG_PROC_CHILDREN
			}
			continue // the thread is gone
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func childrenByScan(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[i+1:])); i >= 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// maxKillRounds bounds KillDescendants against a tree that forks as fast
// as it is killed.
const maxKillRounds = 100

// KillDescendants SIGKILLs every living descendant of the calling
// process except skip (and skip's own descendants are included), over
// and over until a round finds none it has not killed yet: what forked
// while the round ran is caught by the next (a process with SIGKILL
// pending forks no more). It returns how many processes it killed.
// Zombies are left to their parent (or, for orphans, to the caller).
func KillDescendants(skip int) int {
	return killTrees(skip, func(int, map[int]bool) bool { return true })
}

// KillMarked SIGKILLs, among the calling process's children other than
// skip, each one whose environment holds mark (a KEY=VALUE entry), with
// all its descendants, in rounds as KillDescendants does. For a child
// subreaper that runs several process trees: when one tree's leader has
// exited, its orphans are the caller's children that carry the leader's
// mark, while the other trees' leaders and orphans carry their own. It
// returns how many processes it killed.
//
// leader, when not nil, names the caller's children that are the leaders
// of its other trees, not orphans: their environment is not read. A
// keeper of a thousand instances would otherwise read a thousand files at
// each exit, and a million to stop them all.
func KillMarked(skip int, mark string, leader func(pid int) bool) int {
	return killTrees(skip, func(c int, killed map[int]bool) bool {
		if c == skip || leader != nil && leader(c) {
			return false
		}
		return killed[c] || hasEnv(c, mark)
	})
}

// killTrees SIGKILLs, round after round, every living process in the
// trees of the caller's children that root picks (it sees what earlier
// rounds killed), except skip itself.
func killTrees(skip int, root func(child int, killed map[int]bool) bool) int {
	killed := map[int]bool{}
	for round := 0; round < maxKillRounds; round++ {
		fresh := 0
		var queue []int
		for _, c := range Children(os.Getpid()) {
			if root(c, killed) {
				queue = append(queue, c)
			}
		}
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			queue = append(queue, Children(pid)...)
			if pid == skip || killed[pid] {
				continue
			}
			if st, err := readStat(pid); err != nil || st.state == 'Z' || st.state == 'X' {
				continue
			}
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed[pid] = true
				fresh++
			}
		}
		if fresh == 0 {
			break
		}
	}
	return len(killed)
}

// hasEnv reports whether the environment pid started with holds entry.
func hasEnv(pid int, entry string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b)
		}
		if string(b[:i]) == entry {
			return true
		}
		b = b[min(i+1, len(b)):]
	}
	return false
}
