package odata

import (
	"net/url"
	"strconv"
	"strings"
)

// OrderBy is one $orderby term.
type OrderBy struct {
	Field string
	Desc  bool
}

// Query is a parsed set of list query options.
type Query struct {
	Filter  Expr
	OrderBy []OrderBy
	Select  []string
	Expand  []string
	Top     int // -1 when absent
	Skip    int
	Count   bool
}

// Options say which names each option accepts.
type Options struct {
	FilterFields []string // also the $orderby fields
	SelectFields []string
	ExpandFields []string
	MaxTop       int
}

// ParseOrderBy parses "field [asc|desc], ...".
func ParseOrderBy(src string, fields []string) ([]OrderBy, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	var out []OrderBy
	offset := 0
	for _, part := range strings.Split(src, ",") {
		words := strings.Fields(part)
		at := func(w string) int { return offset + strings.Index(part, w) }
		switch {
		case len(words) == 0:
			return nil, &Error{Option: "$orderby", Pos: offset, Msg: "empty term"}
		case len(words) > 2:
			return nil, &Error{Option: "$orderby", Pos: at(words[2]), Msg: "expected field [asc|desc]"}
		}
		if !contains(fields, words[0]) {
			return nil, &Error{Option: "$orderby", Pos: at(words[0]), Msg: "unknown field " + strconv.Quote(words[0])}
		}
		o := OrderBy{Field: words[0]}
		if len(words) == 2 {
			switch words[1] {
			case "asc":
			case "desc":
				o.Desc = true
			default:
				return nil, &Error{Option: "$orderby", Pos: at(words[1]), Msg: "expected asc or desc, got " + strconv.Quote(words[1])}
			}
		}
		out = append(out, o)
		offset += len(part) + 1
	}
	return out, nil
}

func parseList(option, src string, allowed []string) ([]string, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	var out []string
	pos := 0
	for _, part := range strings.Split(src, ",") {
		name := strings.TrimSpace(part)
		if !contains(allowed, name) {
			return nil, &Error{Option: option, Pos: pos, Msg: "unknown name " + strconv.Quote(name) + " (allowed: " + strings.Join(allowed, ", ") + ")"}
		}
		out = append(out, name)
		pos += len(part) + 1
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Parse reads every supported option from q.
func Parse(q url.Values, o Options) (*Query, error) {
	out := &Query{Top: -1}
	var err error
	if out.Filter, err = ParseFilter(q.Get("$filter"), o.FilterFields); err != nil {
		return nil, err
	}
	if out.OrderBy, err = ParseOrderBy(q.Get("$orderby"), o.FilterFields); err != nil {
		return nil, err
	}
	if out.Select, err = parseList("$select", q.Get("$select"), o.SelectFields); err != nil {
		return nil, err
	}
	if out.Expand, err = parseList("$expand", q.Get("$expand"), o.ExpandFields); err != nil {
		return nil, err
	}
	if v := q.Get("$top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || (o.MaxTop > 0 && n > o.MaxTop) {
			return nil, &Error{Option: "$top", Msg: "must be an integer from 0 to " + strconv.Itoa(o.MaxTop)}
		}
		out.Top = n
	}
	if v := q.Get("$skip"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, &Error{Option: "$skip", Msg: "must be a non-negative integer"}
		}
		out.Skip = n
	}
	switch v := q.Get("$count"); v {
	case "", "false":
	case "true":
		out.Count = true
	default:
		return nil, &Error{Option: "$count", Msg: "must be true or false"}
	}
	switch v := q.Get("$inlinecount"); v {
	case "", "none":
	case "allpages":
		out.Count = true
	default:
		return nil, &Error{Option: "$inlinecount", Msg: "must be allpages or none"}
	}
	return out, nil
}
