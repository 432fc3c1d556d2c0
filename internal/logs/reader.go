package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// line is one line of an app's output as read back from a log file.
type line struct {
	time    time.Time
	text    []byte // without the "\n"
	newline bool   // the app ended it with "\n"
	src     *source
}

// openFile is one file of a stream, pinned by its descriptor so a rotation
// cannot swap it under the reader.
type openFile struct {
	f        *os.File
	dev, ino uint64
	size     int64 // at open time
	current  bool  // the file at the stream's path, not a rotated one
}

func (o *openFile) same(dev, ino uint64) bool { return o.dev == dev && o.ino == ino }

func closeFiles(files []*openFile) {
	for _, o := range files {
		o.f.Close()
	}
}

// openFiles opens the stream's current file (if it exists) and its rotated
// files, newest first. A rotation that moves files while they are being
// opened could make one file appear twice or be missed, so it checks that
// every name still names what it opened and retries if not.
func openFiles(path string) ([]*openFile, error) {
	for attempt := 0; ; attempt++ {
		// Writers rotate only under the exclusive flock of the file at
		// path; a shared one held while listing keeps rotations out, so
		// the snapshot is consistent even while a writer rotates fast.
		unlock := lockCurrent(path)
		files, names, err := openFilesOnce(path)
		unlock()
		if err != nil {
			return nil, err
		}
		if attempt == 50 || stillNamed(files, names) {
			return files, nil
		}
		closeFiles(files)
	}
}

func openFilesOnce(path string) ([]*openFile, []string, error) {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("reading log directory: %w", err)
	}
	prefix := filepath.Base(path) + "."
	var nums []int
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), prefix); ok {
			if n, ok := parseDecimal(rest); ok && n >= 1 {
				nums = append(nums, n)
			}
		}
	}
	sort.Ints(nums)
	names := []string{path}
	for _, n := range nums {
		names = append(names, rotatedPath(path, n))
	}
	var files []*openFile
	var opened []string
	for i, name := range names {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // rotated away or not created yet
		}
		if err != nil {
			closeFiles(files)
			return nil, nil, fmt.Errorf("opening log file: %w", err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			closeFiles(files)
			return nil, nil, fmt.Errorf("opening log file %s: %w", name, err)
		}
		files = append(files, &openFile{f: f, dev: st.Dev, ino: st.Ino, size: st.Size, current: i == 0})
		opened = append(opened, name)
	}
	return files, opened, nil
}

// lockCurrent takes a shared flock on the file that path names, making
// sure it is still the one path names once locked, and returns the
// function that releases it. Without a file at path it does nothing.
func lockCurrent(path string) func() {
	for i := 0; i < 10; i++ {
		f, err := os.Open(path)
		if err != nil {
			return func() {}
		}
		fd := int(f.Fd())
		if flock(fd, unix.LOCK_SH) != nil {
			f.Close()
			return func() {}
		}
		var a, b unix.Stat_t
		if unix.Fstat(fd, &a) == nil && unix.Stat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
			return func() { flock(fd, unix.LOCK_UN); f.Close() }
		}
		f.Close() // rotated before we had the lock: take the new file's
	}
	return func() {}
}

// stillNamed reports whether each of names still names the file opened
// from it.
func stillNamed(files []*openFile, names []string) bool {
	for i, o := range files {
		var st unix.Stat_t
		if unix.Stat(names[i], &st) != nil || !o.same(st.Dev, st.Ino) {
			return false
		}
	}
	return true
}

// readableEnd is where the complete records of o end: its size for a
// rotated file (no one writes to it any more, so a trailing partial record
// is final), just after its last "\n" for the current file (a writer may
// be halfway through a record).
func readableEnd(o *openFile) (int64, error) {
	if !o.current {
		return o.size, nil
	}
	return lastLineEnd(o.f, o.size)
}

// lastLineEnd is the offset just after the last "\n" in r[:size], or 0.
func lastLineEnd(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 4096)
	for end := size; end > 0; {
		n := min(int64(len(buf)), end)
		start := end - n
		if _, err := r.ReadAt(buf[:n], start); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("reading log file: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

const chunkSize = 64 << 10

// scanBackward calls fn with each line of r[:end] (without its "\n") and
// its offset, last line first, until fn returns false. A segment after the
// last "\n" counts as a line. The slice passed to fn is only valid during
// the call.
func scanBackward(r io.ReaderAt, end int64, fn func(b []byte, off int64) bool) error {
	pos := end
	var carry []byte // r[pos:pos+len(carry)]: a line whose start is not found yet
	first := true
	for pos > 0 {
		n := min(int64(chunkSize), pos)
		buf := make([]byte, int(n)+len(carry))
		if m, err := r.ReadAt(buf[:n], pos-n); int64(m) < n {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading log file: %w", err)
		}
		copy(buf[n:], carry)
		pos -= n
		e := len(buf)
		if first {
			first = false
			if e > 0 && buf[e-1] == '\n' {
				e-- // the terminator of the last line
			}
		}
		for {
			i := bytes.LastIndexByte(buf[:e], '\n')
			if i < 0 {
				break
			}
			if !fn(buf[i+1:e], pos+int64(i)+1) {
				return nil
			}
			e = i
		}
		carry = buf[:e]
	}
	if end > 0 {
		fn(carry, 0)
	}
	return nil
}

// readRecords calls fn with each "\n"-terminated line of r[off:end]
// (without its "\n") in order, and, if final, with a trailing segment that
// has no "\n". It returns the offset just after the last line passed to fn.
// The slice passed to fn is only valid during the call. br is a buffer to
// reuse.
func readRecords(r io.ReaderAt, off, end int64, final bool, br *bufio.Reader, fn func([]byte)) (int64, error) {
	if end <= off {
		return off, nil
	}
	br.Reset(io.NewSectionReader(r, off, end-off))
	var long []byte
	for {
		seg, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if long != nil {
				long = append(long, seg...)
				seg, long = long, nil
			}
			off += int64(len(seg))
			fn(seg[:len(seg)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, seg...)
		case errors.Is(err, io.EOF):
			rest := append(long, seg...)
			if final && len(rest) > 0 {
				off += int64(len(rest))
				fn(rest)
			}
			return off, nil
		default:
			return off, fmt.Errorf("reading log file: %w", err)
		}
	}
}

// decoder turns one stream's records, fed in file order, into lines,
// putting long lines back together.
type decoder struct {
	src    *source
	chains map[string]*chain // long lines still in pieces, by writer id
	seq    int
	last   time.Time // of the last record: a foreign line gets it
}

type chain struct {
	time time.Time // of the first piece
	text []byte
	seq  int
}

func newDecoder(src *source) *decoder {
	return &decoder{src: src, chains: map[string]*chain{}}
}

// feed decodes one file line and emits the app line it completes, if any.
func (d *decoder) feed(b []byte, emit func(line)) {
	r, ok := parseRecord(b)
	if !ok {
		emit(line{time: d.last, text: bytes.Clone(b), newline: true, src: d.src})
		return
	}
	d.last = r.time
	if r.id == "" {
		emit(line{time: r.time, text: bytes.Clone(r.payload), newline: r.kind == kindLine, src: d.src})
		return
	}
	c := d.chains[r.id]
	if c != nil && r.off == 0 {
		// A new line from this writer while the last one never ended
		// (its writer failed mid-line): show what there is of it.
		emit(line{time: c.time, text: c.text, src: d.src})
		c = nil
	}
	if c == nil {
		c = &chain{time: r.time, seq: d.seq}
		d.seq++
		d.chains[r.id] = c
	}
	c.text = append(c.text, r.payload...)
	if r.kind != kindPartial {
		delete(d.chains, r.id)
		emit(line{time: c.time, text: c.text, newline: r.kind == kindLine, src: d.src})
	}
}

// flush emits, oldest first and without newline, the long lines whose end
// has not been read: used when no more reading will happen.
func (d *decoder) flush(emit func(line)) {
	cs := make([]*chain, 0, len(d.chains))
	for _, c := range d.chains {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].seq < cs[j].seq })
	for _, c := range cs {
		emit(line{time: c.time, text: c.text, src: d.src})
	}
	clear(d.chains)
}

// findStart walks the records of files (newest first, each up to its end)
// backwards, passing each to enough, and returns the position (file index,
// offset) of the record at which enough first reports true with no long
// line left unstarted; or the start of the oldest file.
func findStart(files []*openFile, ends []int64, enough func(r record, ok bool, b []byte) bool) (int, int64, error) {
	open := map[string]bool{} // long lines seen whose first piece is not seen yet
	for i, o := range files {
		found, at := false, int64(0)
		err := scanBackward(o.f, ends[i], func(b []byte, off int64) bool {
			r, ok := parseRecord(b)
			done := enough(r, ok, b)
			if ok && r.id != "" {
				if r.off == 0 {
					delete(open, r.id)
				} else {
					open[r.id] = true
				}
			}
			if done && len(open) == 0 {
				found, at = true, off
				return false
			}
			return true
		})
		if err != nil {
			return 0, 0, err
		}
		if found {
			return i, at, nil
		}
	}
	return len(files) - 1, 0, nil
}

// countLines is an enough function for findStart: true once n lines are
// seen (a long line counts once, at its last piece seen).
func countLines(n int) func(r record, ok bool, b []byte) bool {
	count := 0
	seen := map[string]bool{} // long lines being counted, until their first piece
	return func(r record, ok bool, _ []byte) bool {
		switch {
		case !ok || r.id == "":
			count++
		case !seen[r.id]:
			count++
			seen[r.id] = true
		}
		if ok && r.id != "" && r.off == 0 {
			delete(seen, r.id)
		}
		return count >= n
	}
}

// follower reads one stream: it holds the file being read and the offset
// after the last complete record read, and survives rotation.
type follower struct {
	src      *source
	f        *os.File // nil until a file of the stream is found
	dev, ino uint64
	off      int64
	dec      *decoder
	br       *bufio.Reader
	// removeRead: remove path.1 once it is read (PrintOptions.RemoveRead).
	removeRead bool
}

func newFollower(src *source) *follower {
	return &follower{src: src, dec: newDecoder(src), br: bufio.NewReaderSize(nil, chunkSize)}
}

// removeIfRotated, with removeRead, removes path.1 when it is the file
// just read to its end: an UntilRead writer may rotate again.
func (fl *follower) removeIfRotated() {
	if !fl.removeRead || fl.f == nil {
		return
	}
	p := rotatedPath(fl.src.path, 1)
	var st unix.Stat_t
	if unix.Stat(p, &st) == nil && st.Dev == fl.dev && st.Ino == fl.ino {
		os.Remove(p)
	}
}

func (fl *follower) close() {
	if fl.f != nil {
		fl.f.Close()
		fl.f = nil
	}
}

// take reads o from off to its end and makes it the followed file.
func (fl *follower) take(o *openFile, off int64, emit func(line)) error {
	fl.close()
	fl.f, fl.dev, fl.ino, fl.off = o.f, o.dev, o.ino, off
	return fl.readOn(!o.current, emit)
}

// readOn reads the followed file from fl.off to its current end. final
// means no one writes to it any more.
func (fl *follower) readOn(final bool, emit func(line)) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(fl.f.Fd()), &st); err != nil {
		return fmt.Errorf("reading log file: %w", err)
	}
	off, err := readRecords(fl.f, fl.off, st.Size, final, fl.br, func(b []byte) { fl.dec.feed(b, emit) })
	fl.off = off
	return err
}

// poll emits every line appended to the stream since the last poll, in
// file order. When the path names a new file, it finishes the old one,
// reads the rotated files it has not seen (found by inode), then the new
// one. A stream found after following started is read from its oldest file.
func (fl *follower) poll(emit func(line)) error {
	if fl.f != nil {
		if err := fl.readOn(false, emit); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(fl.src.path, &st); err != nil || st.Dev == fl.dev && st.Ino == fl.ino {
			return nil // unchanged, or mid-rotation: the new file is not there yet
		}
	}
	files, err := openFiles(fl.src.path)
	if err != nil {
		return err
	}
	ours := -1
	for i, o := range files {
		if fl.f != nil && o.same(fl.dev, fl.ino) {
			ours = i
			break
		}
	}
	newer := files // every file is newer than one that was rotated away
	if ours >= 0 {
		newer = files[:ours]
		closeFiles(files[ours:])
	}
	if len(newer) == 0 {
		return nil
	}
	if fl.f != nil {
		// The path names another file, so no writer appends to ours any
		// more (writers check the path under the lock before each write).
		if err := fl.readOn(true, emit); err != nil {
			closeFiles(newer)
			return err
		}
		fl.removeIfRotated()
	}
	for i := len(newer) - 1; i >= 0; i-- {
		if err := fl.take(newer[i], 0, emit); err != nil {
			closeFiles(newer[:i])
			return err
		}
		if !newer[i].current {
			fl.removeIfRotated()
		}
	}
	return nil
}

// tail reads the last n lines of src (all if n < 0) in file order, and
// returns a follower positioned just after them, holding the long lines
// still in pieces.
func tail(src *source, n int) ([]line, *follower, error) {
	fl := newFollower(src)
	files, err := openFiles(src.path)
	if err != nil || len(files) == 0 {
		return nil, fl, err
	}
	ends := make([]int64, len(files))
	for i, o := range files {
		if ends[i], err = readableEnd(o); err != nil {
			closeFiles(files)
			return nil, fl, err
		}
	}
	start, off := len(files)-1, int64(0)
	if n == 0 {
		start, off = 0, ends[0]
	} else if n > 0 {
		if start, off, err = findStart(files, ends, countLines(n)); err != nil {
			closeFiles(files)
			return nil, fl, err
		}
	}
	var lines []line
	emit := func(l line) { lines = append(lines, l) }
	for i := start; i >= 1; i-- {
		_, err := readRecords(files[i].f, off, ends[i], true, fl.br, func(b []byte) { fl.dec.feed(b, emit) })
		if err != nil {
			closeFiles(files)
			return nil, fl, err
		}
		off = 0
	}
	closeFiles(files[1:])
	fl.f, fl.dev, fl.ino = files[0].f, files[0].dev, files[0].ino
	fl.off, err = readRecords(fl.f, off, ends[0], !files[0].current, fl.br, func(b []byte) { fl.dec.feed(b, emit) })
	return lines, fl, err
}
