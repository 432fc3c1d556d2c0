package logs

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/keel-run/keel/internal/spec"
)

// DefaultLines is how many lines per instance Print shows when
// PrintOptions.Lines is 0.
const DefaultLines = 20

// DefaultPollInterval is how often Print looks for new lines when
// following.
const DefaultPollInterval = 100 * time.Millisecond

// PrintOptions say what Print shows and how.
type PrintOptions struct {
	Home    string
	Target  spec.Target // App "" = all apps; Instance -1 = all instances
	Lines   int         // last N lines per instance; 0 means DefaultLines, < 0 every line kept
	Follow  bool        // keep printing new lines until ctx is done
	ErrOnly bool        // only stderr
	Raw     bool        // exactly what the app wrote, nothing added
	JSON    bool        // one object a line: {"app","instance","stream","time","line"}
	// Since, when set, leaves out lines recorded before it (keel run uses
	// it to echo only what its own apps write).
	Since time.Time
	// SplitOver, with JSON and when > 0, writes a line longer than this
	// many bytes as several objects of at most SplitOver bytes each,
	// marked "part" (1, 2, …) and "parts" (their count), cut between
	// UTF-8 characters where the line is valid UTF-8. Log collectors read
	// lines into bounded buffers; keel run uses MaxPayload.
	SplitOver int
	// RemoveRead, when following, removes each rotated file (path.1) once
	// it is read to its end, for writers with Options.UntilRead: keel run
	// --log-files=false, where the files are only a buffer for the echo.
	RemoveRead bool

	// PollInterval is how often files are checked when following; 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
}

// Print writes the last Lines lines of each instance that opts select (its
// stdout and stderr merged by time, the instances then merged by time) to
// w, in the format the package documentation describes. With Follow it
// then keeps writing lines as they are appended, across rotations and for
// instances whose files appear later, until ctx is done, and returns nil.
//
// Without Follow it returns ctx.Err() if ctx ends first. No log files (or
// no log directory) is not an error: nothing is printed. It returns an
// error when a log file cannot be read or w fails (for example a closed
// pipe).
func Print(ctx context.Context, w io.Writer, opts PrintOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n := opts.Lines
	if n == 0 {
		n = DefaultLines
	}
	p := newPrinter(w, opts)
	followers := map[string]*follower{}
	defer func() {
		for _, fl := range followers {
			fl.close()
		}
	}()

	srcs, err := listSources(opts.Home, opts.Target, opts.ErrOnly)
	if err != nil {
		return err
	}
	var blocks [][]line
	for i := 0; i < len(srcs); {
		j := i // srcs[i:j] are the streams of one instance
		for j < len(srcs) && srcs[j].app == srcs[i].app && srcs[j].instance == srcs[i].instance {
			j++
		}
		var streams [][]line
		for _, src := range srcs[i:j] {
			lines, fl, err := tail(src, n)
			fl.removeRead = opts.RemoveRead
			followers[src.key()] = fl
			if err != nil {
				return err
			}
			if !opts.Follow {
				fl.dec.flush(func(l line) { lines = append(lines, l) })
			}
			streams = append(streams, lines)
			p.widen(src)
		}
		merged := mergeByTime(streams)
		if n > 0 && len(merged) > n {
			merged = merged[len(merged)-n:]
		}
		blocks = append(blocks, merged)
		i = j
	}
	if err := p.print(since(mergeByTime(blocks), opts.Since)); err != nil {
		return err
	}
	if !opts.Follow {
		return nil
	}

	interval := opts.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		last := false
		select {
		case <-ctx.Done():
			// One last look, so what was written just before the end (say,
			// an app's final words as keel run stops) is shown too.
			last = true
		case <-tick.C:
		}
		srcs, err := listSources(opts.Home, opts.Target, opts.ErrOnly)
		if err != nil {
			return err
		}
		for _, src := range srcs {
			if followers[src.key()] == nil {
				followers[src.key()] = newFollower(src)
				followers[src.key()].removeRead = opts.RemoveRead
				p.widen(src)
			}
		}
		var news [][]line
		for _, src := range srcs {
			var lines []line
			if err := followers[src.key()].poll(func(l line) { lines = append(lines, l) }); err != nil {
				return err
			}
			news = append(news, lines)
		}
		if err := p.print(since(mergeByTime(news), opts.Since)); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

// since drops the lines recorded before t (none when t is zero).
func since(ls []line, t time.Time) []line {
	if t.IsZero() {
		return ls
	}
	out := ls[:0]
	for _, l := range ls {
		if !l.time.Before(t) {
			out = append(out, l)
		}
	}
	return out
}

// mergeByTime merges lists that are each in file order into one, taking
// the earliest head each time (ties: the earlier list), so every list's own
// order is kept even if its clock went backwards.
func mergeByTime(lists [][]line) []line {
	total := 0
	for _, l := range lists {
		total += len(l)
	}
	out := make([]line, 0, total)
	heads := make([]int, len(lists))
	for len(out) < total {
		best := -1
		for i, l := range lists {
			if heads[i] < len(l) && (best < 0 || l[heads[i]].time.Before(lists[best][heads[best]].time)) {
				best = i
			}
		}
		out = append(out, lists[best][heads[best]])
		heads[best]++
	}
	return out
}

// printer formats lines for Print.
type printer struct {
	w     *bufio.Writer
	opts  PrintOptions
	enc   *json.Encoder
	width int // of the widest "app:N" column so far
}

func newPrinter(w io.Writer, opts PrintOptions) *printer {
	p := &printer{w: bufio.NewWriterSize(w, 64<<10), opts: opts}
	p.enc = json.NewEncoder(p.w)
	p.enc.SetEscapeHTML(false)
	return p
}

func (p *printer) widen(src *source) {
	p.width = max(p.width, len(src.app)+1+len(strconv.Itoa(src.instance)))
}

// jsonLine is the --json shape of one line.
type jsonLine struct {
	App        string `json:"app"`
	Instance   int    `json:"instance"`
	Stream     string `json:"stream"`
	Time       string `json:"time"`
	Line       string `json:"line"`                  // invalid UTF-8 bytes become U+FFFD
	LineBase64 string `json:"line_base64,omitempty"` // the exact bytes, when Line is not
	Partial    bool   `json:"partial,omitempty"`     // the app never ended the line with "\n"
	Part       int    `json:"part,omitempty"`        // with SplitOver: this piece's number, from 1
	Parts      int    `json:"parts,omitempty"`       // with SplitOver: how many pieces the line has
}

func (p *printer) print(lines []line) error {
	for _, l := range lines {
		if err := p.one(l); err != nil {
			return err
		}
	}
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("writing logs: %w", err)
	}
	return nil
}

func (p *printer) one(l line) error {
	switch {
	case p.opts.Raw:
		p.w.Write(l.text)
		if l.newline {
			p.w.WriteByte('\n')
		}
	case p.opts.JSON:
		pieces := [][]byte{l.text}
		if p.opts.SplitOver > 0 && len(l.text) > p.opts.SplitOver {
			pieces = split(l.text, p.opts.SplitOver)
		}
		for i, text := range pieces {
			j := jsonLine{
				App:      l.src.app,
				Instance: l.src.instance,
				Stream:   l.src.stream,
				Time:     l.time.UTC().Format(time.RFC3339Nano),
				Line:     string(text),
				Partial:  !l.newline && i == len(pieces)-1,
			}
			if len(pieces) > 1 {
				j.Part, j.Parts = i+1, len(pieces)
			}
			if !utf8.Valid(text) {
				j.LineBase64 = base64.StdEncoding.EncodeToString(text)
			}
			if err := p.enc.Encode(j); err != nil {
				return fmt.Errorf("writing logs: %w", err)
			}
		}
	default:
		col := l.src.app + ":" + strconv.Itoa(l.src.instance)
		p.w.WriteString(col)
		for i := len(col); i < p.width; i++ {
			p.w.WriteByte(' ')
		}
		if l.src.stream == Stderr {
			p.w.WriteString(" ! ")
		} else {
			p.w.WriteString(" | ")
		}
		p.w.Write(l.text)
		p.w.WriteByte('\n')
	}
	return nil
}

// split cuts b into pieces of at most n bytes (n ≥ 4), each ending before
// the start of a UTF-8 character where b is valid there, so that valid
// text stays valid in every piece.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		cut := n
		for back := 0; back < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(b[cut]); back++ {
			cut--
		}
		if cut == 0 || !utf8.RuneStart(b[cut]) {
			cut = n // not UTF-8 here: cut anywhere, line_base64 keeps the bytes
		}
		out = append(out, b[:cut])
		b = b[cut:]
	}
	return append(out, b)
}
