package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

// A treeNode is one value of a config file in a form common to every format:
// a scalar, a list, a map (keys in file order) or null, with the line it
// starts on (0 when the format has no lines).
type treeNode struct {
	kind  nodeKind
	line  int
	text  string // scalar: the value as written (numbers and booleans too)
	tag   scalarTag
	items []*treeNode
	pairs []pair
}

type pair struct {
	key  string
	line int
	val  *treeNode
}

type nodeKind int

const (
	nullNode nodeKind = iota
	scalarNode
	listNode
	mapNode
)

type scalarTag int

const (
	tagString scalarTag = iota
	tagNumber
	tagBool
	tagOther // dates and the like
)

// describe names what a node is, for "want a string, got a map".
func (n *treeNode) describe() string {
	switch n.kind {
	case nullNode:
		return "nothing"
	case listNode:
		return "a list"
	case mapNode:
		return "a map"
	}
	switch n.tag {
	case tagNumber:
		return "the number " + n.text
	case tagBool:
		return n.text
	}
	return strconv.Quote(n.text)
}

// posError is a syntax error at a line (0: unknown).
type posError struct {
	line int
	err  error
}

func (e *posError) Error() string { return e.err.Error() }

// maxNodes bounds the tree a file may expand to, so YAML aliases cannot
// blow it up ("billion laughs").
const maxNodes = 1 << 17

// --- YAML ---

// Compiled on first use: package-level regexps slow every keel command.
var yamlLineRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^yaml: line (\d+): (.*)$`) })

func parseYAML(data []byte) (*treeNode, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &treeNode{kind: nullNode, line: 1}, nil
		}
		return nil, yamlSyntaxError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &posError{line: extra.Line, err: errors.New("a second YAML document; put every app in one apps list")}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlSyntaxError(data, err)
	}
	c := &yamlConv{}
	return c.convert(&doc)
}

// yamlSyntaxError places a syntax error on the line where the problem is.
// The YAML library reports the line where the enclosing block started
// (often line 1) or none (junk after the first document), so this finds
// the shortest run of leading lines that fails with the same message: the
// problem is on its last line. Failing that, the parser read to the end,
// so the last line is where it gave up.
func yamlSyntaxError(data []byte, err error) error {
	pe := yamlError(err).(*posError)
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 5000 {
		if pe.line == 0 {
			pe.line = len(lines)
		}
		return pe
	}
	want := pe.err.Error()
	var prefix []byte
	for i, l := range lines {
		prefix = append(prefix, l...)
		if e := yamlDecodeAll(prefix); e != nil {
			if yamlError(e).(*posError).err.Error() == want {
				pe.line = i + 1
				return pe
			}
		}
	}
	if pe.line == 0 {
		pe.line = len(lines)
	}
	return pe
}

// yamlDecodeAll decodes every document in data, returning the first error.
func yamlDecodeAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func yamlError(err error) error {
	msg := err.Error()
	if m := yamlLineRE().FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &posError{line: line, err: errors.New(m[2])}
	}
	return &posError{err: errors.New(strings.TrimPrefix(msg, "yaml: "))}
}

type yamlConv struct {
	count int
	// expanding holds the anchors whose aliases are being expanded, to
	// refuse an anchor that contains an alias of itself.
	expanding map[*yaml.Node]bool
}

func (c *yamlConv) convert(y *yaml.Node) (*treeNode, error) {
	c.count++
	if c.count > maxNodes {
		return nil, &posError{line: y.Line, err: errors.New("too many values (aliases expand too far)")}
	}
	switch y.Kind {
	case yaml.DocumentNode:
		if len(y.Content) == 0 {
			return &treeNode{kind: nullNode, line: y.Line}, nil
		}
		return c.convert(y.Content[0])
	case yaml.AliasNode:
		if c.expanding[y.Alias] {
			return nil, &posError{line: y.Line, err: fmt.Errorf("alias *%s is inside its own anchor", y.Value)}
		}
		if c.expanding == nil {
			c.expanding = map[*yaml.Node]bool{}
		}
		c.expanding[y.Alias] = true
		n, err := c.convert(y.Alias)
		delete(c.expanding, y.Alias)
		if err != nil {
			return nil, err
		}
		m := *n
		m.line = y.Line
		return &m, nil
	case yaml.ScalarNode:
		n := &treeNode{kind: scalarNode, line: y.Line, text: y.Value}
		switch y.ShortTag() {
		case "!!null":
			n.kind = nullNode
		case "!!int", "!!float":
			n.tag = tagNumber
		case "!!bool":
			n.tag = tagBool
		case "!!str", "!!binary":
		default:
			n.tag = tagOther
		}
		return n, nil
	case yaml.SequenceNode:
		n := &treeNode{kind: listNode, line: y.Line}
		for _, it := range y.Content {
			v, err := c.convert(it)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, v)
		}
		return n, nil
	case yaml.MappingNode:
		n := &treeNode{kind: mapNode, line: y.Line}
		var merged []pair
		for i := 0; i+1 < len(y.Content); i += 2 {
			k, v := y.Content[i], y.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return nil, &posError{line: k.Line, err: errors.New("a key must be a plain name")}
			}
			val, err := c.convert(v)
			if err != nil {
				return nil, err
			}
			if k.ShortTag() == "!!merge" {
				// "<<: *defaults" (or a list of them): their keys apply
				// unless this map sets them itself.
				srcs := []*treeNode{val}
				if val.kind == listNode {
					srcs = val.items
				}
				for _, s := range srcs {
					if s.kind != mapNode {
						return nil, &posError{line: k.Line, err: errors.New("<< wants a map or a list of maps")}
					}
					for _, p := range s.pairs {
						merged = append(merged, pair{key: p.key, line: k.Line, val: p.val})
					}
				}
				continue
			}
			if prev := n.get(k.Value); prev != nil {
				return nil, &posError{line: k.Line, err: fmt.Errorf("key %q appears twice (first on line %d)", k.Value, prev.line)}
			}
			n.pairs = append(n.pairs, pair{key: k.Value, line: k.Line, val: val})
		}
		for _, p := range merged {
			if n.get(p.key) == nil {
				n.pairs = append(n.pairs, p)
			}
		}
		return n, nil
	}
	return nil, &posError{line: y.Line, err: fmt.Errorf("unexpected YAML node kind %d", y.Kind)}
}

// get returns the value of key in a map node, or nil.
func (n *treeNode) get(key string) *pair {
	for i := range n.pairs {
		if n.pairs[i].key == key {
			return &n.pairs[i]
		}
	}
	return nil
}

// --- JSON ---

// parseJSON reads JSON, allowing // and /* */ comments and trailing commas
// (pm2's JSON files are JavaScript object literals and often have them).
func parseJSON(data []byte) (*treeNode, error) {
	clean := stripJSONC(data)
	p := &jsonParser{data: clean, dec: json.NewDecoder(bytes.NewReader(clean))}
	p.dec.UseNumber()
	n, err := p.value(0)
	if err != nil {
		return nil, p.wrap(err)
	}
	if _, err := p.dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, &posError{line: p.lineAt(int(p.dec.InputOffset())), err: errors.New("more after the end of the top-level value")}
		}
		return nil, p.wrap(err)
	}
	return n, nil
}

type jsonParser struct {
	data  []byte
	dec   *json.Decoder
	count int
}

func (p *jsonParser) wrap(err error) error {
	var pe *posError
	if errors.As(err, &pe) {
		return pe
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &posError{line: p.lineAt(int(se.Offset)), err: errors.New(se.Error())}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &posError{line: p.lineAt(len(p.data)), err: errors.New("unexpected end of JSON")}
	}
	return &posError{err: err}
}

// next returns the line where the next token starts.
func (p *jsonParser) next() int {
	i := int(p.dec.InputOffset())
	for i < len(p.data) {
		switch p.data[i] {
		case ' ', '\t', '\r', '\n', ',', ':':
			i++
			continue
		}
		break
	}
	return p.lineAt(i)
}

func (p *jsonParser) lineAt(off int) int {
	off = min(off, len(p.data))
	return bytes.Count(p.data[:off], []byte("\n")) + 1
}

func (p *jsonParser) value(depth int) (*treeNode, error) {
	p.count++
	if p.count > maxNodes || depth > 1000 {
		return nil, &posError{line: p.next(), err: errors.New("too deeply nested or too large")}
	}
	line := p.next()
	tok, err := p.dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &treeNode{kind: mapNode, line: line}
			for p.dec.More() {
				kl := p.next()
				kt, err := p.dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, &posError{line: kl, err: errors.New("a key must be a string")}
				}
				v, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				if prev := n.get(k); prev != nil {
					return nil, &posError{line: kl, err: fmt.Errorf("key %q appears twice (first on line %d)", k, prev.line)}
				}
				n.pairs = append(n.pairs, pair{key: k, line: kl, val: v})
			}
			if _, err := p.dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		case '[':
			n := &treeNode{kind: listNode, line: line}
			for p.dec.More() {
				v, err := p.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, v)
			}
			if _, err := p.dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		}
	case string:
		return &treeNode{kind: scalarNode, line: line, text: t}, nil
	case json.Number:
		return &treeNode{kind: scalarNode, line: line, text: t.String(), tag: tagNumber}, nil
	case bool:
		return &treeNode{kind: scalarNode, line: line, text: strconv.FormatBool(t), tag: tagBool}, nil
	case nil:
		return &treeNode{kind: nullNode, line: line}, nil
	}
	return nil, &posError{line: line, err: fmt.Errorf("unexpected token %v", tok)}
}

// stripJSONC blanks out comments and trailing commas, keeping every byte
// offset and newline where it was so that line numbers stay true.
func stripJSONC(data []byte) []byte {
	out := bytes.Clone(data)
	inString := false
	for i := 0; i < len(out); i++ {
		c := out[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			for i < len(out) && out[i] != '\n' {
				out[i] = ' '
				i++
			}
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			j := i + 2
			for j+1 < len(out) && !(out[j] == '*' && out[j+1] == '/') {
				j++
			}
			end := min(j+2, len(out))
			for k := i; k < end; k++ {
				if out[k] != '\n' {
					out[k] = ' '
				}
			}
			i = end - 1
		case c == ',':
			if j := skipSpaceAndComments(out, i+1); j < len(out) && (out[j] == '}' || out[j] == ']') {
				out[i] = ' '
			}
		}
	}
	return out
}

// skipSpaceAndComments returns the index of the next byte at or after i
// that is neither white space nor inside a comment.
func skipSpaceAndComments(b []byte, i int) int {
	for i < len(b) {
		switch {
		case b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n':
			i++
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '/':
			for i < len(b) && b[i] != '\n' {
				i++
			}
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			i += 2
			for i+1 < len(b) && !(b[i] == '*' && b[i+1] == '/') {
				i++
			}
			i += 2
		default:
			return i
		}
	}
	return i
}

// --- TOML ---

func parseTOML(data []byte) (*treeNode, error) {
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &posError{line: pe.Position.Line, err: errors.New(pe.Message)}
		}
		return nil, &posError{err: err}
	}
	t := newTOMLLines(data)
	root := &treeNode{kind: mapNode, line: 1}
	for k, v := range m {
		line := t.rootKey(k)
		var n *treeNode
		if k == "apps" {
			n = t.apps(v, line)
		} else {
			n = tomlValue(v, line)
		}
		root.pairs = append(root.pairs, pair{key: k, line: line, val: n})
	}
	sortPairs(root.pairs)
	return root, nil
}

func sortPairs(ps []pair) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].line != ps[j].line {
			return ps[i].line < ps[j].line
		}
		return ps[i].key < ps[j].key
	})
}

// tomlValue converts a decoded TOML value; every node gets line.
func tomlValue(v any, line int) *treeNode {
	switch t := v.(type) {
	case string:
		return &treeNode{kind: scalarNode, line: line, text: t}
	case int64:
		return &treeNode{kind: scalarNode, line: line, text: strconv.FormatInt(t, 10), tag: tagNumber}
	case float64:
		text := strconv.FormatFloat(t, 'g', -1, 64)
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return &treeNode{kind: scalarNode, line: line, text: text, tag: tagOther}
		}
		return &treeNode{kind: scalarNode, line: line, text: text, tag: tagNumber}
	case bool:
		return &treeNode{kind: scalarNode, line: line, text: strconv.FormatBool(t), tag: tagBool}
	case time.Time:
		layout := time.RFC3339Nano
		switch t.Location().String() {
		case "date-local":
			layout = time.DateOnly
		case "time-local":
			layout = time.TimeOnly
		case "datetime-local":
			layout = "2006-01-02T15:04:05.999999999"
		}
		return &treeNode{kind: scalarNode, line: line, text: t.Format(layout), tag: tagOther}
	case []any:
		n := &treeNode{kind: listNode, line: line}
		for _, it := range t {
			n.items = append(n.items, tomlValue(it, line))
		}
		return n
	case []map[string]any:
		n := &treeNode{kind: listNode, line: line}
		for _, it := range t {
			n.items = append(n.items, tomlValue(it, line))
		}
		return n
	case map[string]any:
		n := &treeNode{kind: mapNode, line: line}
		for k, it := range t {
			n.pairs = append(n.pairs, pair{key: k, line: line, val: tomlValue(it, line)})
		}
		sortPairs(n.pairs)
		return n
	}
	// Local dates and times and anything newer.
	return &treeNode{kind: scalarNode, line: line, text: fmt.Sprint(v), tag: tagOther}
}

// tomlLines finds the lines of keys in a TOML file, which the decoder does
// not report. It reads the text line by line: [[apps]] headers start app
// tables, and "key =" or [apps.key] within one is that app's key. In the
// inline form (apps = [{…}, …]) the nth app's key is the nth "key =" in the
// file. It is a heuristic, but only ever picks the line to name in an error.
type tomlLines struct {
	lines     []string
	appStarts []int // 1-based lines of the [[apps]] headers
}

var tomlAppsHeaderRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^\s*\[\[\s*("apps"|'apps'|apps)\s*\]\]`)
})

func newTOMLLines(data []byte) *tomlLines {
	t := &tomlLines{lines: strings.Split(string(data), "\n")}
	for i, l := range t.lines {
		if tomlAppsHeaderRE().MatchString(l) {
			t.appStarts = append(t.appStarts, i+1)
		}
	}
	return t
}

func tomlKeyRE(key string) *regexp.Regexp {
	q := regexp.QuoteMeta(key)
	return regexp.MustCompile(`(^|[\s{,.])("` + q + `"|'` + q + `'|` + q + `)\s*(=|\.)`)
}

func tomlTableRE(key string) *regexp.Regexp {
	q := regexp.QuoteMeta(key)
	return regexp.MustCompile(`^\s*\[\s*("apps"|'apps'|apps)\s*\.\s*("` + q + `"|'` + q + `'|` + q + `)\s*[\].]`)
}

func (t *tomlLines) comment(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "#") }

// rootKey returns the line of a top-level key.
func (t *tomlLines) rootKey(key string) int {
	if key == "apps" && len(t.appStarts) > 0 {
		return t.appStarts[0]
	}
	re := tomlKeyRE(key)
	hdr := regexp.MustCompile(`^\s*\[+\s*("` + regexp.QuoteMeta(key) + `"|` + regexp.QuoteMeta(key) + `)\s*[\].]`)
	for i, l := range t.lines {
		if t.comment(l) {
			continue
		}
		if len(t.appStarts) > 0 && i+1 >= t.appStarts[0] {
			if hdr.MatchString(l) {
				return i + 1
			}
			continue
		}
		if re.MatchString(l) || hdr.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

// apps converts the apps value, giving each app and key its line.
func (t *tomlLines) apps(v any, line int) *treeNode {
	var list []map[string]any
	switch a := v.(type) {
	case []map[string]any:
		list = a
	case []any:
		for _, it := range a {
			m, ok := it.(map[string]any)
			if !ok {
				return tomlValue(v, line)
			}
			list = append(list, m)
		}
	default:
		return tomlValue(v, line)
	}
	n := &treeNode{kind: listNode, line: line}
	seen := map[string]int{} // inline form: how many apps so far had each key
	for i, app := range list {
		appLine := line
		from, to := 0, len(t.lines)
		headers := len(t.appStarts) == len(list)
		if headers {
			appLine = t.appStarts[i]
			from = appLine - 1
			if i+1 < len(t.appStarts) {
				to = t.appStarts[i+1] - 1
			}
		}
		an := &treeNode{kind: mapNode, line: appLine}
		for k, val := range app {
			kl := appLine
			if headers {
				if l := t.find(k, from, to, 0); l > 0 {
					kl = l
				}
			} else if l := t.find(k, 0, len(t.lines), seen[k]); l > 0 {
				kl = l
			}
			seen[k]++
			vn := tomlValue(val, kl)
			if vn.kind == mapNode && headers {
				// env entries in an [apps.env] table have lines of their own.
				for j := range vn.pairs {
					if l := t.find(vn.pairs[j].key, kl-1, to, 0); l > 0 {
						vn.pairs[j].line = l
						vn.pairs[j].val.line = l
					}
				}
				sortPairs(vn.pairs)
			}
			an.pairs = append(an.pairs, pair{key: k, line: kl, val: vn})
		}
		sortPairs(an.pairs)
		n.items = append(n.items, an)
	}
	return n
}

// find returns the line of the nth (0-based) occurrence of key as a key or
// an [apps.key] table within lines [from, to), or 0.
func (t *tomlLines) find(key string, from, to, nth int) int {
	re, hdr := tomlKeyRE(key), tomlTableRE(key)
	for i := max(from, 0); i < to && i < len(t.lines); i++ {
		l := t.lines[i]
		if t.comment(l) {
			continue
		}
		c := len(re.FindAllStringIndex(l, -1))
		if hdr.MatchString(l) {
			c = 1
		}
		if nth < c {
			return i + 1
		}
		nth -= c
	}
	return 0
}
