package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// es256Token is a compact JWS (RFC 7515 §7.1) signed with ES256, parsed
// but not yet verified.
type es256Token struct {
	kid          string
	signingInput string // header.payload, what the signature covers
	payload      []byte
	r, s         *big.Int
}

// errMalformedToken wraps every reason a token cannot be parsed.
var errMalformedToken = errors.New("malformed token")

// parseES256 parses raw as a compact JWS whose protected header says ES256.
// It is what go-jose's ParseSigned and Verify do for our tokens, without
// their generality: go-jose decodes the header into a generic map, checks
// every algorithm and re-encodes the parts, which cost about as much as
// the signature check itself in a reconnect storm (every device's token is
// new to a restarted gateway). Anything but one ES256 signature with a
// 64-byte R||S is refused, as are critical header parameters (none is
// understood here) and unencoded payloads (b64 false, RFC 7797).
func parseES256(raw string) (*es256Token, error) {
	h, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return nil, fmt.Errorf("%w: not a compact JWS", errMalformedToken)
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return nil, fmt.Errorf("%w: not a compact JWS", errMalformedToken)
	}
	headerJSON, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", errMalformedToken, err)
	}
	var header struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
		B64  json.RawMessage `json:"b64"`
	}
	if err := json.Unmarshal(headerJSON, &header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", errMalformedToken, err)
	}
	if header.Alg != "ES256" {
		return nil, fmt.Errorf("%w: algorithm %q, want ES256", errMalformedToken, header.Alg)
	}
	if header.Crit != nil || header.B64 != nil {
		return nil, fmt.Errorf("%w: unsupported critical header parameters", errMalformedToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", errMalformedToken, err)
	}
	rs, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(rs) != 64 {
		return nil, fmt.Errorf("%w: an ES256 signature is 64 bytes", errMalformedToken)
	}
	return &es256Token{
		kid:          header.Kid,
		signingInput: raw[:len(h)+1+len(p)],
		payload:      payload,
		r:            new(big.Int).SetBytes(rs[:32]),
		s:            new(big.Int).SetBytes(rs[32:]),
	}, nil
}

// verify reports whether the signature is pub's; pub must be a P-256 key.
func (t *es256Token) verify(pub any) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return false
	}
	digest := sha256.Sum256([]byte(t.signingInput))
	return ecdsa.Verify(k, digest[:], t.r, t.s)
}
