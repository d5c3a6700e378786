package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// audience is the aud claim of every access token: all ocfcloud resource
// servers accept the same tokens.
const audience = "ocfcloud"

// accessClaims is the payload of an access token.
type accessClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audClaim `json:"aud"`
	ExpiresAt int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	Scope     string   `json:"scope"`
	ClientID  string   `json:"client_id"`
	Role      string   `json:"role,omitempty"`
	DeviceID  string   `json:"di,omitempty"`
}

// audClaim is the aud claim: a string for one audience, an array for two
// (ocfcloud plus an audience the client asked for, seed 002).
type audClaim [2]string

func (a audClaim) MarshalJSON() ([]byte, error) {
	if a[1] == "" || a[1] == a[0] {
		return json.Marshal(a[0])
	}
	return json.Marshal(a[:])
}

// grant is what a token request was granted; it becomes an access token and
// possibly a refresh token.
type grant struct {
	userID   string
	role     string // empty for device tokens: a device never acts as an admin
	clientID string
	deviceID string
	scope    string
	refresh  bool
	// validAfter is the latest revocation cutoff of the user or client;
	// tokens must be issued after it to survive it.
	validAfter time.Time
	ip         string // for the audit log
	// rotates is the refresh token this grant replaces, if any.
	rotates *refreshTokenDoc
	// audience is an extra aud requested at the authorization endpoint.
	audience string
	// id asks for an ID token (OpenID Connect, scope openid).
	id *idTokenRequest
}

// tokenResponse is the RFC 6749 §5.1 answer. scope is always present, even
// empty, because devices expect it.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
	UserID       string `json:"user_id"`
	IDToken      string `json:"id_token,omitempty"`

	// For the issuer's own records; not sent.
	jti       string
	chainID   string
	accessExp time.Time
}

// issue mints the tokens of g and stores the refresh token's hash.
func (s *Server) issue(ctx context.Context, g grant) (tokenResponse, error) {
	now := s.now()
	ttl := s.cfg.AccessTokenTTL
	if g.deviceID != "" {
		ttl = s.cfg.DeviceAccessTokenTTL
	}
	// iat has whole seconds and a revocation covers its whole second, so a
	// token issued in the same second as a secret rotation or a role change
	// is dated one second later to stay valid.
	iat := now.Unix()
	if !g.validAfter.IsZero() && iat <= g.validAfter.Unix() {
		iat = g.validAfter.Unix() + 1
	}
	jti := randomToken(16)
	accessExp := now.Add(ttl)
	resp := tokenResponse{TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), Scope: g.scope, UserID: g.userID, jti: jti, accessExp: accessExp}
	// The refresh token is stored first: a rotation that loses its race
	// costs no signature.
	if g.refresh {
		rt := randomToken(32)
		doc := refreshTokenDoc{
			Hash:            hashToken(rt),
			UserID:          g.userID,
			ClientID:        g.clientID,
			DeviceID:        g.deviceID,
			Scope:           g.scope,
			CreatedAt:       now.UTC(),
			ChainID:         ids.New(),
			ChainStartedAt:  now.UTC(),
			AccessJTI:       jti,
			AccessExpiresAt: accessExp.UTC(),
			Audience:        g.audience,
		}
		if g.deviceID == "" {
			doc.ExpiresAt = now.Add(s.cfg.RefreshTokenTTL).UTC()
		}
		if old := g.rotates; old != nil {
			// Tokens stored before chains existed start one now.
			if old.ChainID != "" {
				doc.ChainID, doc.ChainStartedAt = old.ChainID, old.ChainStartedAt
			}
			if err := s.refresh.rotate(ctx, old, doc, now, s.rememberRotatedUntil(doc, now)); err != nil {
				return tokenResponse{}, err
			}
		} else {
			if err := s.refresh.create(ctx, doc); err != nil {
				return tokenResponse{}, err
			}
			if err := s.enforceRefreshLimits(ctx, doc); err != nil {
				return tokenResponse{}, err
			}
		}
		resp.RefreshToken, resp.chainID = rt, doc.ChainID
	}
	payload, err := json.Marshal(accessClaims{
		Issuer:    s.cfg.Issuer,
		Subject:   g.userID,
		Audience:  audClaim{audience, g.audience},
		ExpiresAt: accessExp.Unix(),
		IssuedAt:  iat,
		ID:        jti,
		Scope:     g.scope,
		ClientID:  g.clientID,
		Role:      g.role,
		DeviceID:  g.deviceID,
	})
	if err != nil {
		return tokenResponse{}, fmt.Errorf("access token claims: %w", err)
	}
	if resp.AccessToken, err = s.keys.Load().signer.sign(payload); err != nil {
		return tokenResponse{}, fmt.Errorf("sign access token: %w", err)
	}
	if g.id != nil {
		if resp.IDToken, err = s.signIDToken(g, resp.AccessToken, now); err != nil {
			return tokenResponse{}, err
		}
	}
	return resp, nil
}

// findRefreshToken returns the live refresh token raw, without consuming it.
func (s *Server) findRefreshToken(ctx context.Context, raw string) (*refreshTokenDoc, error) {
	doc, err := s.refresh.get(ctx, hashToken(raw))
	if err != nil {
		return nil, err
	}
	if !doc.ExpiresAt.IsZero() && !s.now().Before(doc.ExpiresAt) {
		_ = s.refresh.remove(ctx, doc.Hash)
		return nil, errTokenGone
	}
	return doc, nil
}

// deviceRotatedMemory is how long a rotated device refresh token is
// remembered; device tokens never expire, their reuse after this long is
// just an unknown token.
const deviceRotatedMemory = 30 * 24 * time.Hour

// rememberRotatedUntil: a rotated token matters as long as its chain could
// still be alive.
func (s *Server) rememberRotatedUntil(next refreshTokenDoc, now time.Time) time.Time {
	if next.ExpiresAt.IsZero() {
		return now.Add(deviceRotatedMemory)
	}
	return next.ExpiresAt
}

// randomToken returns n random bytes in unpadded base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails since Go 1.24
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is how codes and refresh tokens are stored: SHA-256 in hex. The
// tokens carry 256 random bits, so a fast hash is enough.
func hashToken(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}
