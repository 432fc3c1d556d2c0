package core

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Log files as keel and pm2 write them: keel's records carry a timestamp
// and a mark before the line, pm2's are the line itself.
func TestCountLines(t *testing.T) {
	dir := t.TempDir()
	keel := "2026-12-05T14:24:53.358311940Z | keel-bench-writer 10 1\n" +
		"2026-12-05T14:24:53.368311940Z | keel-bench-writer 10 2\n" +
		"2026-12-05T14:24:53.378311940Z | keel-bench-writer 10 4\n" + // 3 lost
		"2026-12-05T14:24:53.378311940Z | something else\n"
	rotated := "2026-12-05T14:24:53.308311940Z | keel-bench-writer 11 1\n"
	pm2 := "keel-bench-writer 11 2\nkeel-bench-writer 11 3\nkeel-bench-writer 11 3\nkeel-bench-writer 12 1\n"
	for name, s := range map[string]string{"w-0-out.log": keel, "w-1-out.log.1": rotated, "w-out-1.log": pm2} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := CountLines(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.Files != 3 {
		t.Errorf("files: %d, want 3", l.Files)
	}
	got := l.Compare(map[int]int{10: 4, 11: 3})
	if got.Written != 7 || got.Found != 6 || got.Lost != 1 || got.Duplicates != 1 || got.WithGaps != 1 || got.Strangers != 1 {
		t.Errorf("loss: %+v; want written 7, found 6, lost 1, duplicates 1, 1 with gaps, 1 stranger", got)
	}
	if len(got.Gaps) != 1 || !strings.Contains(got.Gaps[0], "pid 10: 1 of 4 missing, first 3") {
		t.Errorf("gaps: %q", got.Gaps)
	}
}
