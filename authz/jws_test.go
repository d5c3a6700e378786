package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func TestJWSSignerOutputVerifiesWithGoJose(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 { // R and S with leading zero bytes must still be 32 bytes
		tok, err := newJWSSigner(key, "k1", "at+jwt").sign([]byte(`{"sub":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		payload, err := jws.Verify(&key.PublicKey)
		if err != nil || string(payload) != `{"sub":"x"}` {
			t.Fatalf("verify: %v %q", err, payload)
		}
		h := jws.Signatures[0].Protected
		if h.KeyID != "k1" || h.Algorithm != "ES256" || h.ExtraHeaders["typ"] != "at+jwt" {
			t.Fatalf("header %+v", h)
		}
	}
}
