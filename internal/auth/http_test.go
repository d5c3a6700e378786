package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

// issuerFixture is an issuer with a published key, a forger without one, and
// a clock the test moves.
type issuerFixture struct {
	t      testing.TB
	now    time.Time
	signer jose.Signer
	forger jose.Signer
	jwks   string
	jti    int
}

func newIssuerFixture(t testing.TB) *issuerFixture {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forgerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := jose.JSONWebKey{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	}))
	t.Cleanup(srv.Close)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	// The forger knows the key id, not the key: every token costs a full
	// signature check, as in `ocfcloud bench c2c`.
	forger, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: forgerKey, KeyID: "k1"}}, nil)
	return &issuerFixture{t: t, now: time.Unix(1_800_000_000, 0), signer: signer, forger: forger, jwks: srv.URL}
}

func (f *issuerFixture) verifier(opts ...Option) *Verifier {
	return NewVerifier(context.Background(), "https://issuer", f.jwks, func() time.Time { return f.now }, opts...)
}

// token signs a token valid for lifetime (negative: already expired).
func (f *issuerFixture) token(s jose.Signer, lifetime time.Duration) string {
	f.jti++
	raw, err := jwt.Signed(s).Claims(map[string]any{
		"iss": "https://issuer", "sub": "user-1", "aud": "ocfcloud", "jti": strconv.Itoa(f.jti),
		"scope": ScopeReadResources, "iat": f.now.Add(-time.Hour).Unix(), "exp": f.now.Add(lifetime).Unix(),
	}).Serialize()
	if err != nil {
		f.t.Fatal(err)
	}
	return raw
}

// withOpaqueToken makes v know raw as an admin-issued token (id t1, scope
// r:resources:*, valid an hour either side of now) and returns raw.
func (f *issuerFixture) withOpaqueToken(v *Verifier, raw string) string {
	v.opaque = newOpaqueTokens()
	v.AddOpaqueToken(OpaqueToken{ID: "t1", Hash: HashOpaqueToken(raw), ClientID: "app", UserID: "u1", Scope: ScopeReadResources,
		CreatedAt: f.now.Add(-time.Hour), ExpiresAt: f.now.Add(time.Hour)})
	return raw
}

func (f *issuerFixture) genuine() string { return f.token(f.signer, time.Hour) }
func (f *issuerFixture) forged() string  { return f.token(f.forger, time.Hour) }

// call sends GET with token (none if empty) from addr through Require.
func call(h http.Handler, addr, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/api/v1/devices", nil)
	r.RemoteAddr = addr + ":40000"
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

// TestForgedTokenFloodIsCutOffWithoutLockingOutKnownTokens: an address that
// sends forged tokens gets 401 for its default budget of 100, then 429 with
// Retry-After and a problem body, without a signature check, while a
// client behind the same address whose token is already verified keeps
// working; after Retry-After, tokens from the address are checked again.
func TestForgedTokenFloodIsCutOffWithoutLockingOutKnownTokens(t *testing.T) {
	f := newIssuerFixture(t)
	h := f.verifier().Require(okHandler, ScopeReadResources)
	const nat, elsewhere = "198.51.100.7", "203.0.113.9"
	known := f.genuine()
	if w := call(h, nat, known); w.Code != http.StatusOK {
		t.Fatalf("genuine token: %d %s", w.Code, w.Body)
	}

	for i := range DefaultFailureBurst {
		if w := call(h, nat, f.forged()); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("forged token %d: %d, WWW-Authenticate %q", i+1, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
	w := call(h, nat, f.forged())
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("forged token past the budget: %d %s", w.Code, w.Body)
	}
	retry, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || retry < 1 {
		t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
	}
	var p httpx.Problem
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != http.StatusTooManyRequests || p.Detail == "" {
		t.Fatalf("problem body %s: %v", w.Body, err)
	}
	// Not even a genuine token is checked while the address is over budget
	// (a check would pass it): the refusal costs no signature verification.
	if w := call(h, nat, f.genuine()); w.Code != http.StatusTooManyRequests {
		t.Fatalf("unknown genuine token from the flooding address: %d", w.Code)
	}

	if w := call(h, nat, known); w.Code != http.StatusOK {
		t.Fatalf("known token from the flooding address: %d %s", w.Code, w.Body)
	}
	if w := call(h, nat, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("no token from the flooding address: %d", w.Code)
	}
	if w := call(h, elsewhere, f.genuine()); w.Code != http.StatusOK {
		t.Fatalf("new genuine token from another address: %d %s", w.Code, w.Body)
	}

	f.now = f.now.Add(time.Duration(retry) * time.Second)
	if w := call(h, nat, f.forged()); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged token after Retry-After: %d, want 401 (checked again)", w.Code)
	}
	if w := call(h, nat, f.genuine()); w.Code != http.StatusOK {
		t.Fatalf("new genuine token after Retry-After: %d %s", w.Code, w.Body)
	}
}

// TestCheapRejectionsDoNotSpendTheBudget: what is refused without a
// signature check (no token, a malformed token such as "Bearer undefined",
// an unknown opaque token, the first use of a cached token after it
// expired) costs less than a 429 and is not counted, so a broken client
// does not lock out its neighbours' new tokens.
func TestCheapRejectionsDoNotSpendTheBudget(t *testing.T) {
	f := newIssuerFixture(t)
	v := f.verifier(WithFailureBudget(1, 2))
	v.opaque = newOpaqueTokens() // as WithRevocations would
	h := v.Require(okHandler)
	cached := f.genuine()
	if w := call(h, "192.0.2.1", cached); w.Code != http.StatusOK {
		t.Fatalf("genuine token: %d", w.Code)
	}
	f.now = f.now.Add(2 * time.Hour) // the cached token expires
	if w := call(h, "192.0.2.1", cached); w.Code != http.StatusUnauthorized {
		t.Fatalf("expired cached token: %d, want 401", w.Code)
	}
	for i := range 10 {
		for _, tok := range []string{"", "undefined", "eyJhbGciOiJFUzI1NiJ9." + strconv.Itoa(i) + ".x", OpaqueTokenPrefix + "guessed"} {
			if w := call(h, "192.0.2.1", tok); w.Code != http.StatusUnauthorized {
				t.Fatalf("token %.30q: %d, want 401", tok, w.Code)
			}
		}
	}
	if w := call(h, "192.0.2.1", f.genuine()); w.Code != http.StatusOK {
		t.Fatalf("fresh genuine token after cheap rejections: %d %s", w.Code, w.Body)
	}
}

// TestExpiredTokensAreCounted: go-oidc checks expiry after the signature,
// so an expired token that is not cached (any use after the first past
// expiry) costs a full check and counts like a forged one; a client late
// to refresh spends one or two of 100.
func TestExpiredTokensAreCounted(t *testing.T) {
	f := newIssuerFixture(t)
	h := f.verifier(WithFailureBudget(1, 2)).Require(okHandler)
	var codes []int
	for range 3 {
		codes = append(codes, call(h, "192.0.2.1", f.token(f.signer, -time.Minute)).Code)
	}
	if want := []int{401, 401, 429}; !slices.Equal(codes, want) {
		t.Fatalf("expired tokens: %v, want %v", codes, want)
	}
}

func TestNegativeFailureBudgetChecksEveryToken(t *testing.T) {
	f := newIssuerFixture(t)
	h := f.verifier(WithFailureBudget(-1, 0)).Require(okHandler)
	for i := range 150 {
		if w := call(h, "192.0.2.1", f.forged()); w.Code != http.StatusUnauthorized {
			t.Fatalf("forged token %d with the budget off: %d", i+1, w.Code)
		}
	}
	if w := call(h, "192.0.2.1", f.genuine()); w.Code != http.StatusOK {
		t.Fatalf("genuine token: %d", w.Code)
	}
}

// TestKnownAdminTokensPassAnExhaustedBudget: admin-issued opaque tokens
// are checked in memory; a known one is never refused.
func TestKnownAdminTokensPassAnExhaustedBudget(t *testing.T) {
	f := newIssuerFixture(t)
	v := f.verifier(WithFailureBudget(1, 3))
	v.opaque = newOpaqueTokens() // as WithRevocations would
	raw := OpaqueTokenPrefix + "admin-issued"
	v.AddOpaqueToken(OpaqueToken{ID: "t1", Hash: HashOpaqueToken(raw), ClientID: "app", UserID: "u1",
		CreatedAt: f.now.Add(-time.Hour), ExpiresAt: f.now.Add(time.Hour)})
	h := v.Require(okHandler)
	var codes []int
	for range 4 {
		codes = append(codes, call(h, "192.0.2.1", f.forged()).Code)
	}
	if want := []int{401, 401, 401, 429}; !slices.Equal(codes, want) {
		t.Fatalf("forged tokens: %v, want %v", codes, want)
	}
	if w := call(h, "192.0.2.1", raw); w.Code != http.StatusOK {
		t.Fatalf("known opaque token: %d %s", w.Code, w.Body)
	}
	if w := call(h, "192.0.2.1", OpaqueTokenPrefix+"guessed"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("unknown opaque token over budget: %d, want 429", w.Code)
	}
}

// TestHandlersSeeTheClaimsWithAndWithoutARequestStore: behind
// httpx.WithRequestID, Require hands the claims on in the request's store;
// without it, on the context. Handlers read them the same way, on the
// first request (signature checked) and on later ones (cached).
func TestHandlersSeeTheClaimsWithAndWithoutARequestStore(t *testing.T) {
	f := newIssuerFixture(t)
	v := f.verifier()
	tok := f.genuine()
	var got *Claims
	seen := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = FromContext(r.Context())
		w.WriteHeader(http.StatusOK)
	})
	for name, h := range map[string]http.Handler{
		"bare":            v.Require(seen, ScopeReadResources),
		"with request id": httpx.WithRequestID(slog.New(slog.DiscardHandler), v.Require(seen, ScopeReadResources)),
	} {
		for i := range 2 {
			got = nil
			if w := call(h, "192.0.2.7", tok); w.Code != http.StatusOK || got == nil || got.Subject != "user-1" || !got.HasScope(ScopeReadResources) {
				t.Fatalf("%s, request %d: %d, claims %+v", name, i, w.Code, got)
			}
		}
	}
}

// TestCallersOfVerifyGetTheirOwnCopy: Require shares the verifier's claims
// with handlers, read-only; Verify's callers get a copy they may change.
func TestCallersOfVerifyGetTheirOwnCopy(t *testing.T) {
	f := newIssuerFixture(t)
	v := f.verifier()
	opaque := f.withOpaqueToken(v, OpaqueTokenPrefix+"admin-issued")
	for _, raw := range []string{f.genuine(), opaque} {
		for range 2 { // the second time from the cache
			c, err := v.Verify(context.Background(), raw)
			if err != nil || !c.HasScope(ScopeReadResources) {
				t.Fatalf("%.20s: %v %+v", raw, err, c)
			}
			c.Scope, c.Subject = "", ""
		}
	}
	if _, err := v.Verify(context.Background(), OpaqueTokenPrefix+"unknown"); err == nil {
		t.Fatal("unknown opaque token accepted")
	}
}

// BenchmarkRequireKnownToken is what Require costs a request whose token
// the verifier has seen: go test -bench Require -benchmem ./internal/auth/
func BenchmarkRequireKnownToken(b *testing.B) {
	f := newIssuerFixture(b)
	v := f.verifier()
	opaque := f.withOpaqueToken(v, OpaqueTokenPrefix+"0123456789012345678901234567890123456789012")
	h := httpx.WithRequestID(slog.New(slog.DiscardHandler), v.Require(okHandler, ScopeReadResources))
	for name, tok := range map[string]string{"jwt": f.genuine(), "opaque": opaque} {
		b.Run(name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/devices", nil)
			r.RemoteAddr = "192.0.2.1:40000"
			r.Header.Set("Authorization", "Bearer "+tok)
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, r)
			if w.code != http.StatusOK {
				b.Fatalf("%d", w.code)
			}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, r)
			}
		})
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
