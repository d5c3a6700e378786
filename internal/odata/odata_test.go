package odata

import (
	"errors"
	"net/url"
	"testing"
)

type rec map[string]Value

func (r rec) Field(n string) (Value, bool) { v, ok := r[n]; return v, ok }

var fields = []string{"name", "types", "online", "owner", "di"}

func TestFilterMatchesDevices(t *testing.T) {
	kitchen := rec{"name": "kitchen light", "types": []string{"oic.wk.d", "oic.d.light"}, "online": true, "owner": "u1", "di": "a"}
	hall := rec{"name": "hall sensor", "types": []string{"oic.d.sensor"}, "online": false, "owner": "u2", "di": "b"}
	cases := []struct {
		filter        string
		kitchen, hall bool
	}{
		{"name eq 'kitchen light'", true, false},
		{"name ne 'kitchen light'", false, true},
		{"online eq true", true, false},
		{"not online", false, true},
		{"online eq false or owner eq 'u1'", true, true},
		{"online and startswith(name,'kit')", true, false},
		{"contains(name, 'sensor')", false, true},
		{"types eq 'oic.d.light'", true, false},
		{"contains(types,'sensor')", false, true},
		{"(name gt 'b') and not (di eq 'b')", true, false},
		{"name le 'hall sensor'", false, true},
		{"tolower(name) eq 'hall sensor'", false, true},
		{"name eq 'it''s'", false, false},
	}
	for _, c := range cases {
		e, err := ParseFilter(c.filter, fields)
		if err != nil {
			t.Fatalf("%s: %v", c.filter, err)
		}
		k, _ := Match(e, kitchen)
		h, _ := Match(e, hall)
		if k != c.kitchen || h != c.hall {
			t.Errorf("%s: kitchen %v hall %v, want %v %v", c.filter, k, h, c.kitchen, c.hall)
		}
	}
}

func TestMalformedFilterNamesPosition(t *testing.T) {
	cases := map[string]int{
		"name eq":             8,
		"name eq 'x":          9,
		"nme eq 'x'":          1,
		"name eq 'x' and":     16,
		"(name eq 'x'":        13,
		"name eq 'x' garbage": 13,
		"foo(name,'x')":       1,
		"contains(name)":      1,
		"name eq 'x' && true": 13,
	}
	for src, pos := range cases {
		_, err := ParseFilter(src, fields)
		var oe *Error
		if !errors.As(err, &oe) {
			t.Errorf("%q: got %v, want *Error", src, err)
			continue
		}
		if oe.Option != "$filter" || oe.Pos+1 != pos {
			t.Errorf("%q: %v, want position %d", src, err, pos)
		}
	}
}

func TestParseAllOptions(t *testing.T) {
	q, err := Parse(url.Values{
		"$filter": {"online eq true"}, "$orderby": {"name desc, di"}, "$select": {"device,status"},
		"$top": {"10"}, "$skip": {"5"}, "$inlinecount": {"allpages"}, "$expand": {"resources"},
	}, Options{FilterFields: fields, SelectFields: []string{"device", "status", "links"}, ExpandFields: []string{"resources"}, MaxTop: 100})
	if err != nil {
		t.Fatal(err)
	}
	if q.Top != 10 || q.Skip != 5 || !q.Count || len(q.OrderBy) != 2 || !q.OrderBy[0].Desc || q.OrderBy[1].Field != "di" || len(q.Select) != 2 || len(q.Expand) != 1 {
		t.Fatalf("parsed %+v", q)
	}
	for opt, val := range map[string]string{"$top": "101", "$skip": "-1", "$orderby": "name sideways", "$select": "nope", "$count": "yes"} {
		_, err := Parse(url.Values{opt: {val}}, Options{FilterFields: fields, SelectFields: []string{"device"}, MaxTop: 100})
		var oe *Error
		if !errors.As(err, &oe) || oe.Option != opt {
			t.Errorf("%s=%s: %v", opt, val, err)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"name eq 'x'", "not (online and contains(types,'a'))", "((((", "'", "a eq -1.5e"} {
		f.Add(s)
	}
	r := rec{"name": "n", "types": []string{"t"}, "online": true}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseFilter(s, fields)
		if err == nil {
			_, _ = Match(e, r)
		}
		_, _ = ParseOrderBy(s, fields)
	})
}
