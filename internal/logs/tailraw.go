package logs

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// TailRaw returns the last maxBytes bytes (fewer if there are fewer) that
// the app wrote on the stream whose log file is path — its raw bytes, with
// no timestamps — reading the rotated files as needed. A line the app is
// still writing (not yet recorded) is not included; lines written by
// another writer of the same path (during a rolling reload) are.
//
// It returns an error wrapping fs.ErrNotExist if neither path nor any of its
// rotated files exist, and an error if a file cannot be read.
func TailRaw(path string, maxBytes int) ([]byte, error) {
	return TailRawSince(path, maxBytes, time.Time{})
}

// TailRawSince is TailRaw limited to lines recorded at or after since (the
// zero time: no limit). A crash report uses it to cut the crash text from
// what the crashing run wrote, not from an earlier run's last words.
func TailRawSince(path string, maxBytes int, since time.Time) ([]byte, error) {
	files, err := openFiles(path)
	if err != nil {
		return nil, err
	}
	defer closeFiles(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("reading log %s: %w", filepath.Base(path), fs.ErrNotExist)
	}
	if maxBytes <= 0 {
		return []byte{}, nil
	}
	ends := make([]int64, len(files))
	for i, o := range files {
		if ends[i], err = readableEnd(o); err != nil {
			return nil, err
		}
	}
	total := 0
	start, off, err := findStart(files, ends, func(r record, ok bool, b []byte) bool {
		switch {
		case !ok:
			total += len(b) + 1
		case r.kind == kindLine:
			total += len(r.payload) + 1
		default:
			total += len(r.payload)
		}
		return total >= maxBytes
	})
	if err != nil {
		return nil, err
	}
	var out []byte
	emit := func(l line) {
		if !since.IsZero() && l.time.Before(since) {
			return
		}
		out = append(out, l.text...)
		if l.newline {
			out = append(out, '\n')
		}
	}
	fl := newFollower(&source{path: path})
	dec := fl.dec
	for i := start; i >= 0; i-- {
		_, err := readRecords(files[i].f, off, ends[i], !files[i].current, fl.br, func(b []byte) { dec.feed(b, emit) })
		if err != nil {
			return nil, err
		}
		off = 0
	}
	dec.flush(emit)
	if len(out) > maxBytes {
		out = out[len(out)-maxBytes:]
	}
	return out, nil
}
