package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func signedWith(t *testing.T, key *ecdsa.PrivateKey, kid, payload string) string {
	t.Helper()
	return signES256(t, key, kid, payload, nil)
}

// verifyRaw parses raw and checks its signature with ks; it answers the payload.
func verifyRaw(ctx context.Context, ks *keySet, raw string) ([]byte, error) {
	tok, err := parseES256(raw)
	if err != nil {
		return nil, err
	}
	if err := ks.verify(ctx, tok); err != nil {
		return nil, err
	}
	return tok.payload, nil
}

// TestForgedTokensDoNotFetchTheKeysAgain: a flood of tokens with a known key
// id and a bad signature, or with unknown key ids, costs at most one JWKS
// request per refresh window; a key rotated in after the window is found.
func TestForgedTokensDoNotFetchTheKeysAgain(t *testing.T) {
	issuerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var published atomic.Value
	published.Store([]jose.JSONWebKey{{Key: &issuerKey.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}})
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: published.Load().([]jose.JSONWebKey)})
	}))
	defer srv.Close()
	ks := newKeySet(context.Background(), srv.URL)
	ctx := context.Background()

	good := signedWith(t, issuerKey, "k1", `{"sub":"u"}`)
	if payload, err := verifyRaw(ctx, ks, good); err != nil || string(payload) != `{"sub":"u"}` {
		t.Fatalf("good token: %q %v", payload, err)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			kid := "k1" // known key id, forged signature
			if i%2 == 1 {
				kid = "forged-" + string(rune('a'+i%26)) // key ids never published
			}
			if _, err := verifyRaw(ctx, ks, signedWith(t, forger, kid, `{"sub":"admin"}`)); err == nil {
				t.Errorf("forged token with kid %q verified", kid)
			}
		})
	}
	wg.Wait()
	if n := requests.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times for 1 good and 200 forged tokens, want 1", n)
	}
	if _, err := verifyRaw(ctx, ks, "not.a.token"); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed token: %v", err)
	}

	// authz rotates to k2: once the window has passed, the new key id is
	// fetched and verifies.
	rotated, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	published.Store([]jose.JSONWebKey{{Key: &rotated.PublicKey, KeyID: "k2", Algorithm: "ES256", Use: "sig"}})
	ks.mu.Lock()
	ks.fetched = ks.fetched.Add(-minKeyRefresh)
	ks.mu.Unlock()
	if _, err := verifyRaw(ctx, ks, signedWith(t, rotated, "k2", `{"sub":"u"}`)); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times after the rotation, want 2", n)
	}
}
