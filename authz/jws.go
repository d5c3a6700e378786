package authz

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// jwsSigner makes compact ES256 JWS (RFC 7515, 7518 §3.4) with a fixed
// protected header, which is encoded once. It is the token endpoint's hot
// path: go-jose re-encodes the header through reflection on every
// signature, which cost a tenth of a grant. Verification stays with go-jose
// and go-oidc in package internal/auth, so every test that verifies a token
// checks this code against them.
type jwsSigner struct {
	key    *ecdsa.PrivateKey
	header string // base64url of the protected header, with the dot
}

func newJWSSigner(key *ecdsa.PrivateKey, kid, typ string) *jwsSigner {
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"ES256", kid, typ})
	return &jwsSigner{key: key, header: base64.RawURLEncoding.EncodeToString(h) + "."}
}

// sign returns header.payload.signature for payload (JSON claims).
func (j *jwsSigner) sign(payload []byte) (string, error) {
	enc := base64.RawURLEncoding
	n := len(j.header) + enc.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+enc.EncodedLen(64))
	buf = append(buf, j.header...)
	buf = enc.AppendEncode(buf, payload)
	digest := sha256.Sum256(buf)
	r, s, err := ecdsa.Sign(rand.Reader, j.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	// R and S as 32-byte big-endian integers, concatenated (RFC 7518 §3.4).
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig[:])
	return string(buf), nil
}
