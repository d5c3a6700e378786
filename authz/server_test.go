package authz_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ocfcloud/ocfcloud/authz"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoveryDocument(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	var d map[string]any
	getJSON(t, c.url+"/.well-known/openid-configuration", &d)
	for k, want := range map[string]string{
		"issuer":         c.url,
		"token_endpoint": c.url + "/oauth/token",
		"jwks_uri":       c.url + "/.well-known/jwks.json",
	} {
		if d[k] != want {
			t.Errorf("%s = %v, want %s", k, d[k], want)
		}
	}
	if _, ok := d["authorization_endpoint"]; ok {
		t.Error("advertises an authorization endpoint that does not exist")
	}
	list := func(k string) string {
		var out []string
		for _, v := range d[k].([]any) {
			out = append(out, v.(string))
		}
		return strings.Join(out, " ")
	}
	for k, want := range map[string]string{
		"grant_types_supported":                 "password authorization_code refresh_token",
		"scopes_supported":                      "openid offline_access " + defaultScope,
		"token_endpoint_auth_methods_supported": "none",
		"id_token_signing_alg_values_supported": "ES256",
		"subject_types_supported":               "public",
		"response_types_supported":              "code",
	} {
		if got := list(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

type jwks struct {
	Keys []struct {
		Kid, Alg, Use, Kty, Crv string
		D                       string `json:"d"`
	} `json:"keys"`
}

func TestJWKSPublishesOnlyPublicKeys(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	var set jwks
	getJSON(t, c.url+"/.well-known/jwks.json", &set)
	if len(set.Keys) != 1 {
		t.Fatalf("%d keys", len(set.Keys))
	}
	k := set.Keys[0]
	if k.Kid == "" || k.Alg != "ES256" || k.Use != "sig" || k.Kty != "EC" || k.Crv != "P-256" || k.D != "" {
		t.Fatalf("key %+v", k)
	}
}

func TestSigningKeySurvivesRestart(t *testing.T) {
	first := startCloud(t, nil, nil, nil)
	tok := first.mustLogin("admin", adminPassword, "").AccessToken

	second := startCloud(t, first.db, first.clock, nil)
	// The restart listens elsewhere, so the issuer stays the first one's.
	v := auth.NewVerifier(context.Background(), first.url, second.url+"/.well-known/jwks.json", first.clock.Now)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("token of the first start does not verify with the second start's JWKS: %v", err)
	}
}

func TestConcurrentStartsShareOneSigningKeyAndOneAdmin(t *testing.T) {
	db := platform.TestMongo(t)
	const n = 3
	servers := make([]*authz.Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = authz.New(context.Background(), authz.Config{Issuer: "http://127.0.0.1:1"}, db)
		}()
	}
	wg.Wait()
	generated := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if servers[i].GeneratedAdminPassword() != "" {
			generated++
		}
	}
	if generated != 1 {
		t.Errorf("%d starts report a generated admin password, want 1", generated)
	}
	kids := map[string]bool{}
	for i := range n {
		mux := http.NewServeMux()
		servers[i].Register(mux)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
		var set jwks
		if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
			t.Fatal(err)
		}
		for _, k := range set.Keys {
			kids[k.Kid] = true
		}
	}
	if len(kids) != 1 {
		t.Fatalf("starts publish %d different keys", len(kids))
	}
}

func TestGeneratedAdminPasswordLogsIn(t *testing.T) {
	first := startCloud(t, nil, nil, func(c *authz.Config) { c.AdminPassword = "" })
	pw := first.srv.GeneratedAdminPassword()
	if len(pw) < 16 {
		t.Fatalf("generated password %d chars", len(pw))
	}
	first.mustLogin("admin", pw, "")

	again := startCloud(t, first.db, first.clock, func(c *authz.Config) { c.AdminPassword = "" })
	if again.srv.GeneratedAdminPassword() != "" {
		t.Fatal("a restart generated another admin password")
	}
	again.mustLogin("admin", pw, "")
}

func TestConfigProblemsAreReportedTogether(t *testing.T) {
	_, err := authz.New(context.Background(), authz.Config{Issuer: "http://x/", AccessTokenTTL: -1, AdminPassword: "short"}, nil)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"slash", "access token TTL", "admin password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestTokenEndpointIsRateLimited(t *testing.T) {
	c := startCloud(t, nil, nil, nil) // the clock stands still, so buckets do not refill
	var last tokenReply
	for range 41 {
		last = c.postToken(url.Values{"grant_type": {"password"}})
	}
	expectOAuthError(t, last, http.StatusTooManyRequests, "temporarily_unavailable")
	if last.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}
