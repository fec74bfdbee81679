package lvm

import (
	"fmt"
	"strconv"
	"strings"
)

// Value is one value of LVM's config format: exactly one of the fields is meaningful,
// as Kind says.
type Value struct {
	Kind  Kind
	Int   int64
	Str   string // a string; a float keeps its text here
	Array []Value
	Sect  *Section
}

// Kind is the type of a Value.
type Kind int

// The kinds of values.
const (
	KindInt Kind = iota
	KindFloat
	KindString
	KindArray
	KindSection
)

// Section is a block of `key = value` settings and named subsections, in file order.
type Section struct {
	Keys   []string
	Values []Value
}

// Get returns the value called key, if any.
func (s *Section) Get(key string) (Value, bool) {
	for i, k := range s.Keys {
		if k == key {
			return s.Values[i], true
		}
	}
	return Value{}, false
}

// Sub returns the subsection called key, or nil.
func (s *Section) Sub(key string) *Section {
	v, ok := s.Get(key)
	if !ok || v.Kind != KindSection {
		return nil
	}
	return v.Sect
}

// Int returns the integer called key.
func (s *Section) Int(key string) (int64, bool) {
	v, ok := s.Get(key)
	return v.Int, ok && v.Kind == KindInt
}

// String returns the string called key.
func (s *Section) String(key string) (string, bool) {
	v, ok := s.Get(key)
	return v.Str, ok && v.Kind == KindString
}

// Strings returns the array of strings called key (status and flags lists).
func (s *Section) Strings(key string) []string {
	v, ok := s.Get(key)
	if !ok || v.Kind != KindArray {
		return nil
	}
	var out []string
	for _, e := range v.Array {
		if e.Kind == KindString {
			out = append(out, e.Str)
		}
	}
	return out
}

// Bounds on the text: nesting and the number of values (sections, settings, array
// elements) in one document.
const (
	maxDepth  = 32
	maxValues = 1 << 19 // at most about 32 MiB of parsed values
)

// ParseText parses LVM's config format (`key = value`, `name { ... }`, arrays in
// brackets, double-quoted strings with backslash escapes, # comments) into its top section.
func ParseText(text []byte) (*Section, error) {
	p := &parser{s: string(text), line: 1}
	top, err := p.section(0)
	if err != nil {
		return nil, err
	}
	if p.skip(); p.pos < len(p.s) {
		return nil, p.errf("unexpected %q", p.s[p.pos])
	}
	return top, nil
}

type parser struct {
	s      string
	pos    int
	line   int
	values int
}

func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("lvm metadata line %d: %s", p.line, fmt.Sprintf(format, a...))
}

// skip passes white space and comments.
func (p *parser) skip() {
	for p.pos < len(p.s) {
		switch c := p.s[p.pos]; {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#':
			for p.pos < len(p.s) && p.s[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func (p *parser) count() error {
	if p.values++; p.values > maxValues {
		return p.errf("more than %d values", maxValues)
	}
	return nil
}

// section reads settings up to a closing brace (depth > 0) or the end (depth 0).
func (p *parser) section(depth int) (*Section, error) {
	if depth > maxDepth {
		return nil, p.errf("sections nested deeper than %d", maxDepth)
	}
	sec := &Section{}
	for {
		p.skip()
		if p.pos >= len(p.s) {
			if depth > 0 {
				return nil, p.errf("missing '}'")
			}
			return sec, nil
		}
		if p.s[p.pos] == '}' {
			if depth == 0 {
				return nil, p.errf("unexpected '}'")
			}
			p.pos++
			return sec, nil
		}
		key := p.ident()
		if key == "" {
			return nil, p.errf("unexpected %q", p.s[p.pos])
		}
		if err := p.count(); err != nil {
			return nil, err
		}
		p.skip()
		if p.pos >= len(p.s) {
			return nil, p.errf("%s: missing value", key)
		}
		var v Value
		switch p.s[p.pos] {
		case '{':
			p.pos++
			sub, err := p.section(depth + 1)
			if err != nil {
				return nil, err
			}
			v = Value{Kind: KindSection, Sect: sub}
		case '=':
			p.pos++
			var err error
			if v, err = p.value(true); err != nil {
				return nil, fmt.Errorf("%w (in %s)", err, key)
			}
		default:
			return nil, p.errf("%s: expected '=' or '{'", key)
		}
		sec.Keys = append(sec.Keys, key)
		sec.Values = append(sec.Values, v)
	}
}

// ident reads a name: LVM's names are letters, digits and "+_.-"; config keys may also
// hold '/'.
func (p *parser) ident() string {
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == '+' || c == '/' || c == '@' {
			p.pos++
			continue
		}
		break
	}
	return p.s[start:p.pos]
}

// value reads a number, a string or (when arrays are allowed) an array.
func (p *parser) value(arrays bool) (Value, error) {
	p.skip()
	if p.pos >= len(p.s) {
		return Value{}, p.errf("missing value")
	}
	switch c := p.s[p.pos]; {
	case c == '"':
		s, err := p.str()
		return Value{Kind: KindString, Str: s}, err
	case c == '[' && arrays:
		p.pos++
		return p.array()
	case c == '-' || c == '+' || c >= '0' && c <= '9':
		return p.number()
	default:
		return Value{}, p.errf("unexpected %q", c)
	}
}

// array reads elements up to ']'; LVM allows a trailing comma and no nesting.
func (p *parser) array() (Value, error) {
	v := Value{Kind: KindArray}
	for {
		p.skip()
		if p.pos >= len(p.s) {
			return Value{}, p.errf("missing ']'")
		}
		if p.s[p.pos] == ']' {
			p.pos++
			return v, nil
		}
		e, err := p.value(false)
		if err != nil {
			return Value{}, err
		}
		if err := p.count(); err != nil {
			return Value{}, err
		}
		v.Array = append(v.Array, e)
		p.skip()
		if p.pos < len(p.s) && p.s[p.pos] == ',' {
			p.pos++
		}
	}
}

// str reads a double-quoted string; a backslash takes the next character literally.
func (p *parser) str() (string, error) {
	p.pos++ // the opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.pos < len(p.s) {
				c = p.s[p.pos]
				p.pos++
			}
		case '\n':
			p.line++
		}
		b.WriteByte(c)
	}
	return "", p.errf("unterminated string")
}

// number reads an integer, or a float kept as text.
func (p *parser) number() (Value, error) {
	start := p.pos
	p.pos++
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+' {
			p.pos++
			continue
		}
		break
	}
	t := p.s[start:p.pos]
	if i, err := strconv.ParseInt(t, 10, 64); err == nil {
		return Value{Kind: KindInt, Int: i}, nil
	}
	if _, err := strconv.ParseFloat(t, 64); err == nil {
		return Value{Kind: KindFloat, Str: t}, nil
	}
	return Value{}, p.errf("bad number %q", t)
}
