package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune a Writer.
type Options struct {
	// MaxSize rotates the file before a write would take it past this many
	// bytes. ≤ 0 never rotates.
	MaxSize int64
	// Keep is how many rotated files (path.1 … path.Keep) are kept. 0 keeps
	// none: a full file is deleted when the next one starts.
	Keep int
	// UntilRead holds off a rotation while path.1 exists: a reader that
	// removes each rotated file once it has read it (PrintOptions.
	// RemoveRead) then sees every record, however fast they come; the file
	// grows past MaxSize meanwhile.
	UntilRead bool
	// Now stamps records; nil means time.Now.
	Now func() time.Time
}

// Writer appends one stream's records to a log file and rotates it. See the
// package documentation for the format and the locking protocol.
//
// Capture and Close may be called from any goroutine. Several Captures may
// run at once (each writes its lines as whole records and tags its long
// lines with its own id), though a keeper runs one per Writer.
type Writer struct {
	path string
	opts Options

	mu        sync.Mutex // guards the fields below; held for a whole batch
	f         *os.File   // nil once closed
	fd        int        // f's descriptor
	dev, ino  uint64     // identity of f, compared with the path's before each write
	checkTail bool       // f may end in a torn record: look before the next write

	// captured counts the bytes Capture read from the app (Captured).
	captured atomic.Uint64
}

// OpenWriter opens (creating it and its directory if needed) the log file
// at path for appending. It fails only if the directory or the file cannot
// be created or opened.
func OpenWriter(path string, opts Options) (*Writer, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Keep < 0 {
		opts.Keep = 0
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating log directory: %w", err)
	}
	w := &Writer{path: path, opts: opts}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.openLocked(); err != nil {
		return nil, err
	}
	return w, nil
}

// openLocked opens whatever file w.path names now. w.mu must be held.
func (w *Writer) openLocked() error {
	// O_RDWR, not O_WRONLY: checkTail reads the file's last byte.
	f, err := os.OpenFile(w.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening log file: %w", err)
	}
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return fmt.Errorf("opening log file %s: %w", w.path, err)
	}
	w.f, w.fd, w.dev, w.ino = f, fd, st.Dev, st.Ino
	w.checkTail = true
	return nil
}

// reopenLocked closes the current file and opens the path again. w.mu must
// be held and the flock released.
func (w *Writer) reopenLocked() error {
	w.f.Close()
	w.f = nil
	return w.openLocked()
}

// Close closes the file. Later Captures drain their reader but write
// nothing and return an error. Closing twice is harmless.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("closing log file: %w", err)
	}
	return nil
}

// Capture reads r until EOF (or a read error) and appends every line to
// the file as records stamped with Options.Now, splitting lines longer than
// MaxPayload. Bytes are written as soon as they are read, except the
// unterminated end of the current line, which waits for its "\n" or for
// EOF (it is then recorded as a line without newline). When Capture
// returns, everything read has been written to the file (not fsynced).
//
// Capture keeps reading even when writing fails (a full disk), so the app
// never blocks on its pipe; it then returns, at EOF, an error that counts
// the lost records and wraps the first write error. It returns the read
// error, if r fails with anything but io.EOF, after writing what was read.
//
// From a pipe (or anything with a syscall.RawConn) it holds its 128 KiB
// buffer only while bytes flow or part of a line waits for its end: an
// idle app's capture costs no buffer, which matters to a keeper of a
// thousand instances.
func (w *Writer) Capture(r io.Reader) error {
	c := newCapturer(w)
	var rc syscall.RawConn
	if sc, ok := r.(syscall.Conn); ok {
		rc, _ = sc.SyscallConn()
	}
	var buf []byte // nil while nothing is held (rc only)
	if rc == nil {
		buf = make([]byte, 2*MaxPayload)
	}
	defer func() {
		if rc != nil && buf != nil {
			putBuf(buf)
		}
	}()
	held := 0 // buf[:held] is the unterminated end of the current line
	for {
		var n int
		var rerr error
		if rc != nil {
			n, rerr = readPooled(rc, &buf, held)
		} else {
			n, rerr = r.Read(buf[held:])
		}
		held = c.consume(buf, held, n)
		if rc != nil && held == 0 && rerr == nil {
			putBuf(buf)
			buf = nil
		}
		if rerr != nil {
			return c.end(buf[:held], rerr)
		}
	}
}

// consume records the n bytes read into buf after the held ones: every
// whole line, and pieces of a line longer than MaxPayload; what is left
// of the current line moves to buf's start. It returns how much that is.
func (c *capturer) consume(buf []byte, held, n int) int {
	c.w.captured.Add(uint64(n))
	ts := appendTime(c.ts[:0], c.w.opts.Now())
	data := buf[:held+n]
	start := 0
	for from := held; ; {
		i := bytes.IndexByte(data[from:], '\n')
		if i < 0 {
			break
		}
		c.line(ts, data[start:from+i], kindLine)
		start = from + i + 1
		from = start
	}
	rest := data[start:]
	for len(rest) > MaxPayload {
		c.piece(ts, rest[:MaxPayload])
		rest = rest[MaxPayload:]
	}
	held = copy(buf, rest)
	c.flush()
	return held
}

// end records held, the unterminated end of the last line, once reading
// ended with rerr, and returns Capture's result.
func (c *capturer) end(held []byte, rerr error) error {
	if len(held) > 0 || c.lineOff > 0 {
		c.line(appendTime(c.ts[:0], c.w.opts.Now()), held, kindEOF)
	}
	c.flush()
	// The batch's buffer goes with the capture.
	c.b = batch{}
	if errors.Is(rerr, io.EOF) {
		return c.err()
	}
	return errors.Join(fmt.Errorf("reading app output: %w", rerr), c.err())
}

// capturePool holds Capture's buffers between reads.
var capturePool = sync.Pool{New: func() any { b := make([]byte, 2*MaxPayload); return &b }}

func getBuf() []byte  { return *capturePool.Get().(*[]byte) }
func putBuf(b []byte) { b = b[:cap(b)]; capturePool.Put(&b) }

// readPooled reads from rc into (*buf)[held:], taking *buf from the pool
// only once bytes are there (with held > 0, *buf is already set). At EOF
// it returns io.EOF; a buffer taken for a read that found nothing goes
// back before it waits.
func readPooled(rc syscall.RawConn, buf *[]byte, held int) (int, error) {
	var n int
	var err error
	cerr := rc.Read(func(fd uintptr) bool {
		if *buf == nil {
			*buf = getBuf()
		}
		for {
			n, err = unix.Read(int(fd), (*buf)[held:])
			if err != unix.EINTR {
				break
			}
		}
		if err == unix.EAGAIN {
			if held == 0 {
				putBuf(*buf)
				*buf = nil
			}
			return false
		}
		return true
	})
	switch {
	case cerr != nil:
		if *buf == nil {
			*buf = getBuf() // the caller slices it
		}
		return 0, cerr
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Captured is how many bytes Capture has read from the app so far: the
// app's own output, before records are framed. Safe to call at any time.
func (w *Writer) Captured() uint64 { return w.captured.Load() }

// capturer is the state of one Capture call (or Poller stream).
type capturer struct {
	w        *Writer
	id       string // tags the pieces of this call's long lines
	ts       [timeLen]byte
	lineOff  int64 // bytes of the current line already recorded as pieces
	b        batch
	lost     int // records that could not be written
	firstErr error
}

func newCapturer(w *Writer) *capturer {
	return &capturer{w: w, id: fmt.Sprintf("%08x", rand.Uint32())}
}

// line records the (rest of the) current line, ended by kind.
func (c *capturer) line(ts, p []byte, kind byte) {
	if c.lineOff == 0 && len(p) <= MaxPayload {
		c.b.add(ts, kind, "", 0, p)
		return
	}
	for len(p) > MaxPayload {
		c.piece(ts, p[:MaxPayload])
		p = p[MaxPayload:]
	}
	c.b.add(ts, kind, c.id, c.lineOff, p)
	c.lineOff = 0
}

// piece records a non-final piece of a long line.
func (c *capturer) piece(ts, p []byte) {
	c.b.add(ts, kindPartial, c.id, c.lineOff, p)
	c.lineOff += int64(len(p))
}

func (c *capturer) flush() {
	if len(c.b.ends) == 0 {
		return
	}
	written, err := c.w.write(&c.b)
	if err != nil {
		c.lost += len(c.b.ends) - written
		if c.firstErr == nil {
			c.firstErr = err
		}
	}
	c.b.buf, c.b.ends = c.b.buf[:0], c.b.ends[:0]
}

func (c *capturer) err() error {
	if c.firstErr == nil {
		return nil
	}
	return fmt.Errorf("%d log records could not be written to %s: %w", c.lost, c.w.path, c.firstErr)
}

// batch is whole records ready to append.
type batch struct {
	buf  []byte
	ends []int // end offset in buf of each record
}

func (b *batch) add(ts []byte, kind byte, id string, off int64, payload []byte) {
	b.buf = appendRecord(b.buf, ts, kind, id, off, payload)
	b.ends = append(b.ends, len(b.buf))
}

// write appends every record of b, rotating as needed. It returns how many
// records were written; on an error the rest of b is not written.
func (w *Writer) write(b *batch) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	next := 0
	for next < len(b.ends) {
		if w.f == nil {
			return next, fmt.Errorf("writing log: %w", os.ErrClosed)
		}
		base := 0
		if next > 0 {
			base = b.ends[next-1]
		}
		k, err := w.appendLocked(b.buf[base:], b.ends[next:], base)
		next += k
		if err != nil {
			return next, err
		}
	}
	return len(b.ends), nil
}

// appendLocked writes, under the file's flock, as many whole records of
// buf (record i ends at ends[i]-base) as fit below MaxSize. It returns how
// many it wrote; 0 and no error means the file was rotated or replaced and
// the caller should go again. w.mu must be held.
func (w *Writer) appendLocked(buf []byte, ends []int, base int) (int, error) {
	fd := w.fd
	if err := flock(fd, unix.LOCK_EX); err != nil {
		return 0, fmt.Errorf("locking log file: %w", err)
	}
	locked := true
	unlock := func() {
		if locked {
			flock(fd, unix.LOCK_UN)
			locked = false
		}
	}
	defer unlock()

	var st unix.Stat_t
	if err := unix.Stat(w.path, &st); err != nil || st.Dev != w.dev || st.Ino != w.ino {
		// Another writer rotated the file, or someone moved it: follow the path.
		unlock()
		return 0, w.reopenLocked()
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("writing log: %w", err)
	}
	size := st.Size
	var sep []byte
	if w.checkTail && size > 0 {
		// A writer died or failed mid-record: start ours on a line of its own.
		var last [1]byte
		if _, err := unix.Pread(fd, last[:], size-1); err == nil && last[0] != '\n' {
			sep = []byte{'\n'}
		}
	}
	k := len(ends)
	if limit := w.opts.MaxSize; limit > 0 && size+int64(len(sep)+ends[k-1]-base) > limit && !w.unreadLocked() {
		k = sort.Search(len(ends), func(i int) bool {
			return size+int64(len(sep)+ends[i]-base) > limit
		})
		if k == 0 {
			if size > 0 {
				if err := rotate(w.path, w.opts.Keep); err != nil {
					return 0, fmt.Errorf("rotating log: %w", err)
				}
				unlock()
				return 0, w.reopenLocked()
			}
			k = 1 // a record larger than MaxSize goes alone into an empty file
		}
	}
	data := buf[:ends[k-1]-base]
	if sep != nil {
		data = append(sep, data...)
	}
	if _, err := w.f.Write(data); err != nil {
		w.checkTail = true
		return 0, fmt.Errorf("writing log: %w", err)
	}
	w.checkTail = false
	return k, nil
}

// unreadLocked says whether, under UntilRead, the last rotated file is
// still there for its reader. The caller holds the file's flock.
func (w *Writer) unreadLocked() bool {
	if !w.opts.UntilRead {
		return false
	}
	_, err := os.Lstat(rotatedPath(w.path, 1))
	return err == nil
}

// rotate shifts path.N-1 → path.N … path → path.1 (or, with keep 0,
// deletes path) and deletes rotated files beyond keep. The caller holds
// the flock of the file at path.
func rotate(path string, keep int) error {
	if keep <= 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	} else {
		for i := keep - 1; i >= 1; i-- {
			err := os.Rename(rotatedPath(path, i), rotatedPath(path, i+1))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		if err := os.Rename(path, rotatedPath(path, 1)); err != nil {
			return err
		}
	}
	// Files beyond keep are left over from a larger Keep.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	prefix := filepath.Base(path) + "."
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), prefix); ok {
			if n, ok := parseDecimal(rest); ok && n > keep {
				os.Remove(filepath.Join(filepath.Dir(path), e.Name()))
			}
		}
	}
	return nil
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}
