package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Scopes of the C2C API and OAuth.
const (
	ScopeReadDeviceInformation = "r:deviceinformation:*"
	ScopeReadResources         = "r:resources:*"
	ScopeWriteResources        = "w:resources:*"
	ScopeWriteSubscriptions    = "w:subscriptions:*"
	ScopeOfflineAccess         = "offline_access"
)

// RoleAdmin is the role claim value of administrators, who see every device.
const RoleAdmin = "admin"

// ErrNoToken means the request carried no Bearer token.
var ErrNoToken = errors.New("no bearer token")

// Claims are the parts of an access token that resource servers use.
type Claims struct {
	Subject   string    `json:"sub"`
	Issuer    string    `json:"iss"`
	ClientID  string    `json:"client_id"`
	Scope     string    `json:"scope"`
	Role      string    `json:"role,omitempty"`
	DeviceID  string    `json:"di,omitempty"`
	ID        string    `json:"jti"`
	ExpiresAt time.Time `json:"-"`
	IssuedAt  time.Time `json:"-"`
}

// HasScope reports whether the token grants scope.
func (c *Claims) HasScope(scope string) bool {
	return slices.Contains(strings.Fields(c.Scope), scope)
}

// IsAdmin reports whether the token belongs to an administrator.
func (c *Claims) IsAdmin() bool { return c.Role == RoleAdmin }

// Verifier checks access tokens against authz's published keys.
type Verifier struct {
	v *oidc.IDTokenVerifier
}

// NewVerifier verifies tokens of issuer, fetching keys from jwksURL (which may
// differ from the issuer's public address, e.g. a loopback or in-cluster URL).
// now is used for expiry checks; nil means time.Now.
func NewVerifier(ctx context.Context, issuer, jwksURL string, now func() time.Time) *Verifier {
	keys := oidc.NewRemoteKeySet(ctx, jwksURL)
	return &Verifier{v: oidc.NewVerifier(issuer, keys, &oidc.Config{
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: []string{oidc.ES256},
		Now:                  now,
	})}
}

// Verify checks signature, issuer and expiry of raw and returns its claims.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	tok, err := v.v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	var c Claims
	if err := tok.Claims(&c); err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	c.ExpiresAt, c.IssuedAt = tok.Expiry, tok.IssuedAt
	if c.Subject == "" {
		return nil, errors.New("verify token: no subject")
	}
	return &c, nil
}

// BearerToken returns the token of the Authorization header. Tokens in the
// query string are never accepted.
func BearerToken(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", ErrNoToken
	}
	return strings.TrimSpace(tok), nil
}
