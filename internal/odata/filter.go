package odata

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Error is a malformed query option.
type Error struct {
	Option string // e.g. "$filter"
	Pos    int    // byte offset in the option's value, 0-based
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s at position %d", e.Option, e.Msg, e.Pos+1)
}

// Value is a literal or field value: string, bool, float64, nil, or []string.
type Value = any

// Record gives an expression access to one item's fields.
type Record interface {
	// Field returns the value of name and whether the field exists.
	Field(name string) (Value, bool)
}

// Expr is a parsed $filter expression.
type Expr interface {
	eval(r Record) (Value, error)
}

// Match reports whether r satisfies e; a nil expression matches everything.
func Match(e Expr, r Record) (bool, error) {
	if e == nil {
		return true, nil
	}
	v, err := e.eval(r)
	if err != nil {
		return false, err
	}
	b, _ := v.(bool)
	return b, nil
}

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokString
	tokNumber
	tokLParen
	tokRParen
	tokComma
)

type token struct {
	kind tokenKind
	text string
	pos  int
}

type lexer struct {
	option string
	src    string
	pos    int
}

func (l *lexer) errf(pos int, format string, args ...any) *Error {
	return &Error{Option: l.option, Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func (l *lexer) next() (token, error) {
	for l.pos < len(l.src) && l.src[l.pos] == ' ' {
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.src) {
		return token{kind: tokEOF, pos: start}, nil
	}
	c := l.src[l.pos]
	switch {
	case c == '(':
		l.pos++
		return token{tokLParen, "(", start}, nil
	case c == ')':
		l.pos++
		return token{tokRParen, ")", start}, nil
	case c == ',':
		l.pos++
		return token{tokComma, ",", start}, nil
	case c == '\'':
		var b strings.Builder
		l.pos++
		for {
			if l.pos >= len(l.src) {
				return token{}, l.errf(start, "unterminated string")
			}
			if l.src[l.pos] == '\'' {
				if l.pos+1 < len(l.src) && l.src[l.pos+1] == '\'' { // '' escapes a quote
					b.WriteByte('\'')
					l.pos += 2
					continue
				}
				l.pos++
				return token{tokString, b.String(), start}, nil
			}
			b.WriteByte(l.src[l.pos])
			l.pos++
		}
	case c == '-' || (c >= '0' && c <= '9'):
		l.pos++
		for l.pos < len(l.src) && (l.src[l.pos] >= '0' && l.src[l.pos] <= '9' || l.src[l.pos] == '.') {
			l.pos++
		}
		return token{tokNumber, l.src[start:l.pos], start}, nil
	case isIdentByte(c):
		for l.pos < len(l.src) && isIdentByte(l.src[l.pos]) {
			l.pos++
		}
		return token{tokIdent, l.src[start:l.pos], start}, nil
	}
	return token{}, l.errf(start, "unexpected character %q", rune(c))
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '.' || c == '/' || unicode.IsLetter(rune(c)) || (c >= '0' && c <= '9')
}

// maxFilterLength and maxDepth bound the work a hostile filter can cause.
const (
	maxFilterLength = 2048
	maxDepth        = 32
)

type parser struct {
	lex    *lexer
	tok    token
	fields map[string]bool
	depth  int
}

// ParseFilter parses a $filter value. fields lists the names that may be used;
// anything else is an error naming it.
func ParseFilter(src string, fields []string) (Expr, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	if len(src) > maxFilterLength {
		return nil, &Error{Option: "$filter", Pos: maxFilterLength, Msg: fmt.Sprintf("longer than %d characters", maxFilterLength)}
	}
	p := &parser{lex: &lexer{option: "$filter", src: src}, fields: map[string]bool{}}
	for _, f := range fields {
		p.fields[f] = true
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	e, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.lex.errf(p.tok.pos, "unexpected %q", p.tok.text)
	}
	return e, nil
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) isKeyword(k string) bool { return p.tok.kind == tokIdent && p.tok.text == k }

func (p *parser) parseOr() (Expr, error) {
	left, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.isKeyword("or") {
		if err := p.advance(); err != nil {
			return nil, err
		}
		right, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		left = &logical{op: "or", l: left, r: right}
	}
	return left, nil
}

func (p *parser) parseAnd() (Expr, error) {
	left, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for p.isKeyword("and") {
		if err := p.advance(); err != nil {
			return nil, err
		}
		right, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		left = &logical{op: "and", l: left, r: right}
	}
	return left, nil
}

func (p *parser) parseUnary() (Expr, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.lex.errf(p.tok.pos, "nested deeper than %d", maxDepth)
	}
	if p.isKeyword("not") {
		if err := p.advance(); err != nil {
			return nil, err
		}
		e, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return &not{e: e}, nil
	}
	return p.parseComparison()
}

var comparisonOps = map[string]bool{"eq": true, "ne": true, "gt": true, "lt": true, "ge": true, "le": true}

func (p *parser) parseComparison() (Expr, error) {
	left, err := p.parsePrimary()
	if err != nil {
		return nil, err
	}
	if p.tok.kind == tokIdent && comparisonOps[p.tok.text] {
		op := p.tok.text
		if err := p.advance(); err != nil {
			return nil, err
		}
		right, err := p.parsePrimary()
		if err != nil {
			return nil, err
		}
		return &compare{op: op, l: left, r: right}, nil
	}
	return left, nil
}

var functions = map[string]bool{"contains": true, "startswith": true, "endswith": true, "tolower": true}

func (p *parser) parsePrimary() (Expr, error) {
	t := p.tok
	switch t.kind {
	case tokLParen:
		if err := p.advance(); err != nil {
			return nil, err
		}
		e, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tokRParen {
			return nil, p.lex.errf(p.tok.pos, "expected )")
		}
		return e, p.advance()
	case tokString:
		return literal{v: t.text}, p.advance()
	case tokNumber:
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return nil, p.lex.errf(t.pos, "bad number %q", t.text)
		}
		return literal{v: f}, p.advance()
	case tokIdent:
		switch t.text {
		case "true", "false":
			return literal{v: t.text == "true"}, p.advance()
		case "null":
			return literal{v: nil}, p.advance()
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tokLParen {
			if !functions[t.text] {
				return nil, p.lex.errf(t.pos, "unknown function %q", t.text)
			}
			return p.parseCall(t)
		}
		if !p.fields[t.text] {
			return nil, p.lex.errf(t.pos, "unknown field %q", t.text)
		}
		return field{name: t.text}, nil
	case tokEOF:
		return nil, p.lex.errf(t.pos, "unexpected end of expression")
	}
	return nil, p.lex.errf(t.pos, "unexpected %q", t.text)
}

func (p *parser) parseCall(name token) (Expr, error) {
	if err := p.advance(); err != nil { // consume (
		return nil, err
	}
	var args []Expr
	for p.tok.kind != tokRParen {
		if len(args) > 0 {
			if p.tok.kind != tokComma {
				return nil, p.lex.errf(p.tok.pos, "expected , or )")
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
		}
		a, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		args = append(args, a)
	}
	want := 2
	if name.text == "tolower" {
		want = 1
	}
	if len(args) != want {
		return nil, p.lex.errf(name.pos, "%s takes %d arguments", name.text, want)
	}
	return &call{fn: name.text, args: args}, p.advance()
}

type literal struct{ v Value }

func (l literal) eval(Record) (Value, error) { return l.v, nil }

type field struct{ name string }

func (f field) eval(r Record) (Value, error) {
	v, _ := r.Field(f.name)
	return v, nil
}

type not struct{ e Expr }

func (n *not) eval(r Record) (Value, error) {
	v, err := n.e.eval(r)
	if err != nil {
		return nil, err
	}
	b, _ := v.(bool)
	return !b, nil
}

type logical struct {
	op   string
	l, r Expr
}

func (lg *logical) eval(r Record) (Value, error) {
	lv, err := lg.l.eval(r)
	if err != nil {
		return nil, err
	}
	lb, _ := lv.(bool)
	if lg.op == "and" && !lb {
		return false, nil
	}
	if lg.op == "or" && lb {
		return true, nil
	}
	rv, err := lg.r.eval(r)
	if err != nil {
		return nil, err
	}
	rb, _ := rv.(bool)
	return rb, nil
}

type compare struct {
	op   string
	l, r Expr
}

func (c *compare) eval(r Record) (Value, error) {
	lv, err := c.l.eval(r)
	if err != nil {
		return nil, err
	}
	rv, err := c.r.eval(r)
	if err != nil {
		return nil, err
	}
	// A collection field compares true when any element does (types eq 'x').
	if list, ok := lv.([]string); ok {
		for _, e := range list {
			if compareScalar(c.op, e, rv) {
				return c.op != "ne", nil
			}
		}
		return c.op == "ne", nil
	}
	return compareScalar(c.op, lv, rv), nil
}

func compareScalar(op string, a, b Value) bool {
	cmp, ok := Compare(a, b)
	if !ok {
		return op == "ne"
	}
	switch op {
	case "eq":
		return cmp == 0
	case "ne":
		return cmp != 0
	case "gt":
		return cmp > 0
	case "lt":
		return cmp < 0
	case "ge":
		return cmp >= 0
	case "le":
		return cmp <= 0
	}
	return false
}

// Compare orders two values of the same kind; ok is false when they are of
// different kinds (nil equals only nil).
func Compare(a, b Value) (int, bool) {
	switch x := a.(type) {
	case nil:
		if b == nil {
			return 0, true
		}
		return 0, false
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case bool:
		y, ok := b.(bool)
		if !ok {
			return 0, false
		}
		switch {
		case x == y:
			return 0, true
		case !x:
			return -1, true
		}
		return 1, true
	}
	return 0, false
}

type call struct {
	fn   string
	args []Expr
}

func (c *call) eval(r Record) (Value, error) {
	vals := make([]Value, len(c.args))
	for i, a := range c.args {
		v, err := a.eval(r)
		if err != nil {
			return nil, err
		}
		vals[i] = v
	}
	if c.fn == "tolower" {
		s, _ := vals[0].(string)
		return strings.ToLower(s), nil
	}
	needle, _ := vals[1].(string)
	test := func(s string) bool {
		switch c.fn {
		case "contains":
			return strings.Contains(s, needle)
		case "startswith":
			return strings.HasPrefix(s, needle)
		default:
			return strings.HasSuffix(s, needle)
		}
	}
	switch hay := vals[0].(type) {
	case string:
		return test(hay), nil
	case []string:
		for _, s := range hay {
			if test(s) {
				return true, nil
			}
		}
	}
	return false, nil
}
