package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestCachedTokensAreStillCheckedForRevocationAndExpiry: the second use of a
// token comes from the cache, and still fails once the token is revoked or
// expired.
func TestCachedTokensAreStillCheckedForRevocationAndExpiry(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := jose.JSONWebKey{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	}))
	defer srv.Close()
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	now := time.Now()
	clock := func() time.Time { return now }
	issue := func(jti string) string {
		raw, err := jwt.Signed(signer).Claims(map[string]any{
			"iss": "https://issuer", "sub": "user-1", "aud": "ocfcloud", "jti": jti, "scope": ScopeReadResources,
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	v := NewVerifier(context.Background(), "https://issuer", srv.URL, clock)
	ctx := context.Background()
	a, b := issue("a"), issue("b")
	for range 2 { // the second round is served from the cache
		if _, err := v.Verify(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	v.Revoke(Revocation{TokenID: "a", ExpiresAt: now.Add(time.Hour)})
	if _, err := v.Verify(ctx, a); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked cached token: %v", err)
	}
	if _, err := v.Verify(ctx, b); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := v.Verify(ctx, b); err == nil {
		t.Fatal("expired cached token accepted")
	}
	// A tampered copy of a cached token is not a cache hit.
	if _, err := v.Verify(ctx, a+"x"); err == nil {
		t.Fatal("tampered token accepted")
	}
}
