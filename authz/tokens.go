package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// audience is the aud claim of every access token: all ocfcloud resource
// servers accept the same tokens.
const audience = "ocfcloud"

// accessClaims is the payload of an access token.
type accessClaims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	Scope     string `json:"scope"`
	ClientID  string `json:"client_id"`
	Role      string `json:"role,omitempty"`
	DeviceID  string `json:"di,omitempty"`
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
}

type refreshTokenDoc struct {
	Hash      string    `bson:"_id"`
	UserID    string    `bson:"user_id"`
	ClientID  string    `bson:"client_id"`
	DeviceID  string    `bson:"device_id"`
	Scope     string    `bson:"scope"`
	CreatedAt time.Time `bson:"created_at"`
	ExpiresAt time.Time `bson:"expires_at"` // zero: never
}

// errTokenGone means a refresh token is unknown, expired or already rotated.
var errTokenGone = errors.New("refresh token is invalid, expired or already used")

// issue mints the tokens of g and stores the refresh token's hash.
func (s *Server) issue(ctx context.Context, g grant) (tokenResponse, error) {
	now := s.now()
	ttl := s.cfg.AccessTokenTTL
	if g.deviceID != "" {
		ttl = s.cfg.DeviceAccessTokenTTL
	}
	payload, err := json.Marshal(accessClaims{
		Issuer:    s.cfg.Issuer,
		Subject:   g.userID,
		Audience:  audience,
		ExpiresAt: now.Add(ttl).Unix(),
		IssuedAt:  now.Unix(),
		ID:        randomToken(16),
		Scope:     g.scope,
		ClientID:  g.clientID,
		Role:      g.role,
		DeviceID:  g.deviceID,
	})
	if err != nil {
		return tokenResponse{}, fmt.Errorf("access token claims: %w", err)
	}
	jws, err := s.keys.signer.Sign(payload)
	if err != nil {
		return tokenResponse{}, fmt.Errorf("sign access token: %w", err)
	}
	at, err := jws.CompactSerialize()
	if err != nil {
		return tokenResponse{}, fmt.Errorf("sign access token: %w", err)
	}
	resp := tokenResponse{
		AccessToken: at,
		TokenType:   "Bearer",
		ExpiresIn:   int64(ttl / time.Second),
		Scope:       g.scope,
		UserID:      g.userID,
	}
	if g.refresh {
		rt := randomToken(32)
		doc := refreshTokenDoc{
			Hash:      hashToken(rt),
			UserID:    g.userID,
			ClientID:  g.clientID,
			DeviceID:  g.deviceID,
			Scope:     g.scope,
			CreatedAt: now.UTC(),
		}
		if g.deviceID == "" {
			doc.ExpiresAt = now.Add(s.cfg.RefreshTokenTTL).UTC()
		}
		if _, err := s.refreshTokens.InsertOne(ctx, doc); err != nil {
			return tokenResponse{}, fmt.Errorf("store refresh token: %w", err)
		}
		resp.RefreshToken = rt
	}
	return resp, nil
}

// findRefreshToken returns the live refresh token raw, without consuming it.
func (s *Server) findRefreshToken(ctx context.Context, raw string) (*refreshTokenDoc, error) {
	var doc refreshTokenDoc
	err := s.refreshTokens.FindOne(ctx, bson.M{"_id": hashToken(raw)}).Decode(&doc)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return nil, errTokenGone
	case err != nil:
		return nil, fmt.Errorf("find refresh token: %w", err)
	case !doc.ExpiresAt.IsZero() && !s.now().Before(doc.ExpiresAt):
		_, _ = s.refreshTokens.DeleteOne(ctx, bson.M{"_id": doc.Hash})
		return nil, errTokenGone
	}
	return &doc, nil
}

// consumeRefreshToken deletes the token with hash; only the one caller whose
// delete removed it may issue its successor, so concurrent refreshes of one
// token have exactly one winner.
func (s *Server) consumeRefreshToken(ctx context.Context, hash string) error {
	res, err := s.refreshTokens.DeleteOne(ctx, bson.M{"_id": hash})
	if err != nil {
		return fmt.Errorf("rotate refresh token: %w", err)
	}
	if res.DeletedCount != 1 {
		return errTokenGone
	}
	return nil
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
