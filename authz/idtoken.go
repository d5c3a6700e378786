package authz

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// idTokenRequest carries what an ID token needs beyond the grant.
type idTokenRequest struct {
	nonce    string
	authTime time.Time
	username string
}

type idClaims struct {
	Issuer            string `json:"iss"`
	Subject           string `json:"sub"`
	Audience          string `json:"aud"`
	AuthorizedParty   string `json:"azp"`
	ExpiresAt         int64  `json:"exp"`
	IssuedAt          int64  `json:"iat"`
	AuthTime          int64  `json:"auth_time,omitempty"`
	Nonce             string `json:"nonce,omitempty"`
	AccessTokenHash   string `json:"at_hash"`
	PreferredUsername string `json:"preferred_username,omitempty"`
}

// signIDToken makes the OpenID Connect ID token of g (Core §2, §3.1.3.6):
// audience the client, at_hash the left half of SHA-256 of the access token.
func (s *Server) signIDToken(g grant, accessToken string, now time.Time) (string, error) {
	sum := sha256.Sum256([]byte(accessToken))
	c := idClaims{
		Issuer: s.cfg.Issuer, Subject: g.userID, Audience: g.clientID, AuthorizedParty: g.clientID,
		ExpiresAt: now.Add(s.cfg.AccessTokenTTL).Unix(), IssuedAt: now.Unix(),
		Nonce: g.id.nonce, AccessTokenHash: base64.RawURLEncoding.EncodeToString(sum[:16]),
		PreferredUsername: g.id.username,
	}
	if !g.id.authTime.IsZero() {
		c.AuthTime = g.id.authTime.Unix()
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("id token claims: %w", err)
	}
	tok, err := s.keys.Load().idSigner.sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign id token: %w", err)
	}
	return tok, nil
}
