package authz_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/ocfcloud/ocfcloud/authz"
)

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"", "openid", "r:resources:*  offline_access", "a\tb", `a"b`, "x x x", strings.Repeat("s ", 1200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scopes, err := authz.ParseScope(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, sc := range scopes {
			if sc == "" || seen[sc] || strings.ContainsAny(sc, " \"\\") {
				t.Fatalf("ParseScope(%q) = %q", s, scopes)
			}
			for i := 0; i < len(sc); i++ {
				if sc[i] < 0x21 || sc[i] > 0x7e {
					t.Fatalf("ParseScope(%q) kept byte %#x", s, sc[i])
				}
			}
			seen[sc] = true
		}
		// Parsing the canonical form again gives the same list.
		again, err := authz.ParseScope(strings.Join(scopes, " "))
		if err != nil || strings.Join(again, " ") != strings.Join(scopes, " ") {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", s, scopes, again, err)
		}
	})
}

func FuzzValidateRedirectURI(f *testing.F) {
	for _, s := range []string{
		"https://app.example/cb", "http://localhost:8080/cb", "http://127.0.0.1/cb", "http://[::1]:1/x",
		"http://example.com/cb", "https://a/b#c", "https://u:p@a/", "javascript:alert(1)", "//evil/cb",
		"https://a\\@evil/", "http://localhost.evil.com/", "https://a:99999/", "HTTPS://A/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if authz.ValidateRedirectURI(s) != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("accepted unparsable %q", s)
		}
		if u.Fragment != "" || u.User != nil || u.Host == "" || !u.IsAbs() {
			t.Fatalf("accepted %q: %+v", s, u)
		}
		switch u.Scheme {
		case "https":
		case "http":
			if h := u.Hostname(); h != "localhost" && h != "127.0.0.1" && h != "::1" {
				t.Fatalf("accepted http on %q", h)
			}
		default:
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
	})
}
