package core

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// WriterMark starts every line of bench/apps/writer: "<mark><pid> <seq>".
const WriterMark = "keel-bench-writer "

// Lines counts the writer's lines found in log files, per writer pid.
type Lines struct {
	// Seen[pid][seq] counts the copies of line seq (1-based) of pid.
	Seen map[int]map[int]int
	// Files is how many files were read.
	Files int
}

// CountLines reads every regular file in dir (current and rotated log
// files, whatever their names) and counts the writer's lines in them. A
// manager's own prefix before the mark (keel's timestamp and record kind)
// is skipped; so is any line without the mark.
func CountLines(dir string) (*Lines, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("counting log lines: %w", err)
	}
	l := &Lines{Seen: map[int]map[int]int{}}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := l.addFile(filepath.Join(dir, e.Name())); err != nil {
			return nil, fmt.Errorf("counting log lines: %w", err)
		}
		l.Files++
	}
	return l, nil
}

func (l *Lines) addFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		l.add(sc.Bytes())
	}
	return sc.Err()
}

func (l *Lines) add(line []byte) {
	i := bytes.Index(line, []byte(WriterMark))
	if i < 0 {
		return
	}
	rest := line[i+len(WriterMark):]
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return
	}
	pid, err1 := strconv.Atoi(string(rest[:sp]))
	seq, err2 := strconv.Atoi(string(bytes.TrimRight(rest[sp+1:], "\r")))
	if err1 != nil || err2 != nil || seq < 1 {
		return
	}
	m := l.Seen[pid]
	if m == nil {
		m = map[int]int{}
		l.Seen[pid] = m
	}
	m[seq]++
}

// Loss compares what each writer says it wrote (pid → lines written, from
// its done file) with the lines found.
type Loss struct {
	Written, Found   int // lines: written by the writers, found in the files (copies counted once)
	Lost, Duplicates int
	// Gaps lists up to 10 writers that miss lines, as
	// "pid 123: 1 of 2000 missing, first 1734".
	Gaps []string
	// WithGaps is how many writers miss at least one line.
	WithGaps int
	// Strangers is how many pids found in the files wrote no done file.
	Strangers int
}

// Compare computes the loss for the writers of written.
func (l *Lines) Compare(written map[int]int) Loss {
	var r Loss
	pids := make([]int, 0, len(written))
	for pid := range written {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		n, seen := written[pid], l.Seen[pid]
		r.Written += n
		missing, first := 0, 0
		for seq := 1; seq <= n; seq++ {
			c := seen[seq]
			if c == 0 {
				if missing == 0 {
					first = seq
				}
				missing++
				continue
			}
			r.Found++
			r.Duplicates += c - 1
		}
		if missing > 0 {
			r.Lost += missing
			r.WithGaps++
			if len(r.Gaps) < 10 {
				r.Gaps = append(r.Gaps, fmt.Sprintf("pid %d: %d of %d missing, first %d", pid, missing, n, first))
			}
		}
	}
	for pid := range l.Seen {
		if _, ok := written[pid]; !ok {
			r.Strangers++
		}
	}
	return r
}
