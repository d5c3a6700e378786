package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

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
		"issuer":                 c.url,
		"token_endpoint":         c.url + "/oauth/token",
		"jwks_uri":               c.url + "/.well-known/jwks.json",
		"revocation_endpoint":    c.url + "/oauth/revoke",
		"introspection_endpoint": c.url + "/oauth/introspect",
	} {
		if d[k] != want {
			t.Errorf("%s = %v, want %s", k, d[k], want)
		}
	}
	if d["authorization_endpoint"] != c.url+"/oauth/authorize" || d["authorization_response_iss_parameter_supported"] != true {
		t.Errorf("authorization endpoint %v", d["authorization_endpoint"])
	}
	list := func(k string) string {
		var out []string
		for _, v := range d[k].([]any) {
			out = append(out, v.(string))
		}
		return strings.Join(out, " ")
	}
	for k, want := range map[string]string{
		"grant_types_supported":                 "password authorization_code refresh_token client_credentials",
		"scopes_supported":                      "openid offline_access " + defaultScope,
		"token_endpoint_auth_methods_supported": "client_secret_basic client_secret_post none",
		"id_token_signing_alg_values_supported": "ES256",
		"subject_types_supported":               "public",
		"response_types_supported":              "code",
		"code_challenge_methods_supported":      "S256",
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

func TestSigningKeyRotationKeepsOldKeyUntilItsTokensExpire(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	before := c.mustLogin("admin", adminPassword, "").AccessToken
	var set jwks
	r := c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/signing-keys/rotate", before, nil)
	r.decode(t, &set)
	if len(set.Keys) != 2 {
		t.Fatalf("after rotation %d keys published", len(set.Keys))
	}
	after := c.mustLogin("admin", adminPassword, "").AccessToken
	if kidOf(t, before) == kidOf(t, after) {
		t.Fatal("the new token is signed with the old key")
	}
	v := c.verifier()
	for _, tok := range []string{before, after} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("verify: %v", err)
		}
	}
	// A restart keeps signing with the new key.
	again := startCloud(t, c.db, c.clock, nil)
	if kidOf(t, again.mustLogin("admin", adminPassword, "").AccessToken) != kidOf(t, after) {
		t.Error("a restart went back to the old key")
	}
	// Once every token of the old key has expired, it is no longer published.
	c.clock.Advance(2 * time.Hour)
	getJSON(t, c.url+"/.well-known/jwks.json", &set)
	if len(set.Keys) != 1 || set.Keys[0].Kid != kidOf(t, after) {
		t.Fatalf("after expiry: %+v", set.Keys)
	}
}

func kidOf(t *testing.T, jwt string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct{ Kid string }
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	getJSON(t, c.url+"/api/v1/authz/openapi.json", &doc)
	for _, route := range []string{
		"GET /api/v1/apps", "POST /api/v1/apps", "GET /api/v1/apps/{id}", "PATCH /api/v1/apps/{id}", "DELETE /api/v1/apps/{id}",
		"POST /api/v1/apps/{id}/secret/reveal", "POST /api/v1/apps/{id}/secret/rotate", "POST /api/v1/apps/{id}/client-id/rotate",
		"GET /api/v1/apps/{id}/tokens", "POST /api/v1/apps/{id}/tokens", "DELETE /api/v1/apps/{id}/tokens/{tokenId}",
		"GET /api/v1/users", "POST /api/v1/users", "GET /api/v1/users/{id}", "PATCH /api/v1/users/{id}",
		"GET /api/v1/audit", "POST /api/v1/signing-keys/rotate", "POST /api/v1/onboarding-codes",
		"POST /oauth/token", "POST /oauth/revoke", "POST /oauth/introspect", "GET /oauth/authorize", "GET /userinfo",
		"GET /.well-known/openid-configuration", "GET /.well-known/jwks.json",
	} {
		method, path, _ := strings.Cut(route, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("%s is not documented", route)
		}
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
}

func TestTokenEndpointIsRateLimitedPerClient(t *testing.T) {
	c := startCloud(t, nil, nil, func(cfg *authz.Config) {
		cfg.TokenRateIP = -1
		cfg.TokenRateClient, cfg.TokenBurstClient = 1, 3
	})
	app := c.newApp(c.adminToken(), map[string]any{"name": "busy", "type": "native"})
	other := c.newApp(c.adminToken(), map[string]any{"name": "calm", "type": "native"})
	var last tokenReply
	for range 4 {
		last = c.clientCredentials(app.ClientID, app.ClientSecret, "")
	}
	expectOAuthError(t, last, http.StatusTooManyRequests, "temporarily_unavailable")
	if last.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", last.Header.Get("Retry-After"))
	}
	if r := c.clientCredentials(other.ClientID, other.ClientSecret, ""); r.Status != http.StatusOK {
		t.Fatalf("another client is limited too: %d %s", r.Status, r.Body)
	}
	c.clock.Advance(time.Second)
	if r := c.clientCredentials(app.ClientID, app.ClientSecret, ""); r.Status != http.StatusOK {
		t.Fatalf("after a second: %d %s", r.Status, r.Body)
	}
}

func TestDeviceGrantsAreNotHeldToThePerIPLimit(t *testing.T) {
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.TokenBurstIP = 2 })
	for range 5 { // the gateway refreshing many devices from one address
		r := c.postToken(refreshForm(deviceClient, "unknown-token", deviceA))
		expectOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
	}
	var last tokenReply
	for range 3 {
		last = c.postToken(refreshForm(cliClient, "unknown-token", ""))
	}
	expectOAuthError(t, last, http.StatusTooManyRequests, "temporarily_unavailable")
}
