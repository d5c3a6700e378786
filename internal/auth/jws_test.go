package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func signES256(t testing.TB, key *ecdsa.PrivateKey, kid string, payload string, extra map[jose.HeaderKey]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithHeader("kid", kid)
	for k, v := range extra {
		opts = opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// goJoseVerifies is the reference: what go-jose accepts for ES256 with pub.
func goJoseVerifies(raw string, pub *ecdsa.PublicKey) bool {
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return false
	}
	_, err = jws.Verify(pub)
	return err == nil
}

func TestParseES256AcceptsWhatGoJoseAcceptsAndNothingElse(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good := signES256(t, key, "k1", `{"sub":"u"}`, nil)

	tok, err := parseES256(good)
	if err != nil || tok.kid != "k1" || string(tok.payload) != `{"sub":"u"}` || !tok.verify(&key.PublicKey) {
		t.Fatalf("a good token: %v %+v", err, tok)
	}
	if tok.verify(&other.PublicKey) || tok.verify(&p384.PublicKey) || tok.verify("not a key") {
		t.Error("verified with the wrong key")
	}

	h, p, s := func() (string, string, string) {
		parts := strings.Split(good, ".")
		return parts[0], parts[1], parts[2]
	}()
	enc := base64.RawURLEncoding.EncodeToString
	bad := map[string]string{
		"alg none":               enc([]byte(`{"alg":"none","kid":"k1"}`)) + "." + p + ".",
		"alg HS256":              enc([]byte(`{"alg":"HS256","kid":"k1"}`)) + "." + p + "." + s,
		"crit header":            signES256(t, key, "k1", `{"sub":"u"}`, map[jose.HeaderKey]any{"crit": []string{"exp"}, "exp": 1}),
		"b64 false":              enc([]byte(`{"alg":"ES256","kid":"k1","b64":false}`)) + "." + p + "." + s,
		"four parts":             good + ".x",
		"two parts":              h + "." + p,
		"padded payload":         h + "." + p + "=" + "." + s,
		"short signature":        h + "." + p + "." + s[:40],
		"header not JSON":        enc([]byte(`alg`)) + "." + p + "." + s,
		"signature not base64":   h + "." + p + "." + strings.Repeat("*", len(s)),
		"JSON serialization":     `{"payload":"` + p + `","signatures":[]}`,
		"empty":                  "",
		"dots only":              "..",
		"header with whitespace": " " + good,
	}
	for name, raw := range bad {
		if tok, err := parseES256(raw); err == nil && tok.verify(&key.PublicKey) {
			t.Errorf("%s: accepted", name)
		}
	}
	// Tampering with any part breaks the signature.
	tampered := []string{
		enc([]byte(`{"alg":"ES256","kid":"k2"}`)) + "." + p + "." + s,
		h + "." + enc([]byte(`{"sub":"admin"}`)) + "." + s,
	}
	for _, raw := range tampered {
		tok, err := parseES256(raw)
		if err != nil {
			t.Fatal(err)
		}
		if tok.verify(&key.PublicKey) {
			t.Errorf("tampered token verified: %s", raw)
		}
	}
}

// FuzzParseES256 checks parseES256 never accepts a token go-jose refuses,
// never panics, and accepts every token go-jose accepts.
func FuzzParseES256(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := signES256(f, key, "k1", `{"sub":"u","exp":1}`, nil)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, raw string) {
		ours := false
		if tok, err := parseES256(raw); err == nil {
			ours = tok.verify(&key.PublicKey)
		}
		if ref := goJoseVerifies(raw, &key.PublicKey); ours != ref {
			t.Fatalf("parseES256 %v, go-jose %v for %q", ours, ref, raw)
		}
	})
}

// TestJWTClaimsAreChecked: issuer, expiry (required), not-before with five
// minutes of leeway, and a subject, as go-oidc checked them.
func TestJWTClaimsAreChecked(t *testing.T) {
	f := newIssuerFixture(t)
	v := f.verifier()
	sign := func(claims map[string]any) string {
		raw, err := jwt.Signed(f.signer).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	now := f.now.Unix()
	base := func(edit func(map[string]any)) string {
		c := map[string]any{"iss": "https://issuer", "sub": "user-1", "iat": now - 60, "exp": now + 3600, "scope": ScopeReadResources}
		edit(c)
		return sign(c)
	}
	c, err := v.Verify(context.Background(), base(func(map[string]any) {}))
	if err != nil || c.Subject != "user-1" || !c.ExpiresAt.Equal(time.Unix(now+3600, 0)) || !c.IssuedAt.Equal(time.Unix(now-60, 0)) {
		t.Fatalf("good token: %+v %v", c, err)
	}
	if _, err := v.Verify(context.Background(), base(func(c map[string]any) { c["nbf"] = now + 120 })); err != nil {
		t.Errorf("nbf within the leeway: %v", err)
	}
	for name, raw := range map[string]string{
		"foreign issuer": base(func(c map[string]any) { c["iss"] = "https://elsewhere" }),
		"no expiry":      base(func(c map[string]any) { delete(c, "exp") }),
		"expired":        base(func(c map[string]any) { c["exp"] = now - 1 }),
		"not yet valid":  base(func(c map[string]any) { c["nbf"] = now + 600 }),
		"no subject":     base(func(c map[string]any) { delete(c, "sub") }),
		"exp a string":   base(func(c map[string]any) { c["exp"] = "tomorrow" }),
		"forged":         f.forged(),
	} {
		if c, err := v.Verify(context.Background(), raw); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
}
