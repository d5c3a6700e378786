package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/ratelimit"
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

	// tokenHash is set for admin-issued opaque tokens.
	tokenHash string
}

// HasScope reports whether the token grants scope.
func (c *Claims) HasScope(scope string) bool {
	// strings.Fields without its slice: Require asks on every request.
	for rest := c.Scope; ; {
		rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
		if rest == "" {
			return false
		}
		end := strings.IndexFunc(rest, unicode.IsSpace)
		if end < 0 {
			end = len(rest)
		}
		if rest[:end] == scope {
			return true
		}
		rest = rest[end:]
	}
}

// IsAdmin reports whether the token belongs to an administrator.
func (c *Claims) IsAdmin() bool { return c.Role == RoleAdmin }

// Verifier checks access tokens against authz's published keys and against
// the local set of revoked tokens, clients and users.
type Verifier struct {
	issuer  string
	keys    *keySet
	now     func() time.Time
	revoked *revocations

	// Set by WithRevocations.
	ready     chan struct{} // closed when the stored revocations are loaded
	startErr  error         // written before ready is closed
	subs      []*nats.Subscription
	opaque    *opaqueTokens
	nc        *nats.Conn
	db        *mongo.Database
	onExpired func(ExpiredTokenUse)
	stop      context.CancelFunc

	// verified caches the claims of tokens whose signature was checked, so a
	// client that calls again with the same token costs a map lookup instead
	// of an ES256 verification. Expiry and revocation are checked on every
	// use all the same.
	verified verifiedCache

	// failures is Require's budget of failed verifications per source
	// address (WithFailureBudget).
	failures *ratelimit.Limiter[string]
}

// Option configures a Verifier.
type Option func(*verifierOptions)

type verifierOptions struct {
	nc           *nats.Conn
	db           *mongo.Database
	onExpired    func(ExpiredTokenUse)
	failureRate  float64
	failureBurst int
}

// WithRevocations makes the verifier follow authz: it subscribes to
// RevokedSubject and TokensSubject on nc and loads the stored revocations
// and admin-issued tokens from db at start, so it also accepts those opaque
// tokens. Either may be nil. Until the stored state is loaded, Verify waits
// (fails closed).
func WithRevocations(nc *nats.Conn, db *mongo.Database) Option {
	return func(o *verifierOptions) { o.nc, o.db = nc, db }
}

// OnExpiredToken is called when a request carries an expired admin-issued
// token and the verifier has no NATS connection to report it on
// ExpiredUseSubject. authz uses it to write the audit log.
func OnExpiredToken(f func(ExpiredTokenUse)) Option {
	return func(o *verifierOptions) { o.onExpired = f }
}

// NewVerifier verifies tokens of issuer, fetching keys from jwksURL (which may
// differ from the issuer's public address, e.g. a loopback or in-cluster URL).
// now is used for expiry checks; nil means time.Now. ctx bounds the
// background work (key fetches, loading revocations).
func NewVerifier(ctx context.Context, issuer, jwksURL string, now func() time.Time, opts ...Option) *Verifier {
	if now == nil {
		now = time.Now
	}
	var o verifierOptions
	for _, opt := range opts {
		opt(&o)
	}
	v := &Verifier{
		issuer:   issuer,
		keys:     newKeySet(ctx, jwksURL),
		now:      now,
		revoked:  newRevocations(),
		failures: newFailureBudget(o.failureRate, o.failureBurst),
	}
	v.onExpired = o.onExpired
	if o.nc != nil || o.db != nil {
		v.nc, v.db = o.nc, o.db
		v.opaque = newOpaqueTokens()
		bg, stop := context.WithCancel(ctx)
		v.stop = stop
		v.startRevocations(bg, o.nc, o.db)
		if o.db != nil {
			go v.flushLoop(bg)
		}
	}
	return v
}

// Close stops following authz and writes pending last-used times.
func (v *Verifier) Close() {
	for _, s := range v.subs {
		_ = s.Unsubscribe()
	}
	if v.stop != nil {
		v.stop()
	}
}

// Verify checks signature, issuer, expiry and revocation of raw and returns
// its claims. A revoked token gives an error wrapping ErrRevoked.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	c, shared, _, err := v.verify(ctx, raw)
	if shared {
		cp := *c
		return &cp, nil
	}
	return c, err
}

// verify is Verify. shared means c is the verifier's cached value, which the
// caller must not modify. sigChecked reports whether the token reached the
// signature check, the only expensive step: Require charges those
// failures, and only those, to the source address's budget. A token is
// parsed first (a malformed one ends there) and issuer and expiry are
// checked after the signature, so a bad signature, an unknown key id, a
// foreign issuer, a past expiry or a revocation is charged; an absent,
// malformed or unknown opaque token costs less than the 429 would, and is
// not. A token in the cache never gets there.
func (v *Verifier) verify(ctx context.Context, raw string) (c *Claims, shared, sigChecked bool, err error) {
	if err := v.waitReady(ctx); err != nil {
		return nil, false, false, fmt.Errorf("verify token: %w", err)
	}
	if isOpaque(raw) {
		c, err := v.verifyOpaque(raw)
		return c, err == nil, false, err
	}
	key := tokenKey(raw)
	if c := v.verified.get(key); c != nil {
		if !v.clock().Before(c.ExpiresAt) {
			v.verified.drop(key)
			return nil, false, false, errors.New("verify token: token is expired")
		}
		if v.revoked.revoked(c) {
			return nil, false, false, fmt.Errorf("verify token: %w", ErrRevoked)
		}
		return c, true, false, nil
	}
	tok, err := parseES256(raw)
	if err != nil {
		return nil, false, false, fmt.Errorf("verify token: %w", err)
	}
	c, err = v.verifyJWT(ctx, tok, key)
	return c, false, true, err
}

// verifyJWT checks a parsed token that is not in the cache and caches it:
// an ES256 signature by one of the issuer's keys, then the issuer, expiry
// (required) and not-before (5 minutes of leeway for clock skew) claims, in
// the order and with the rules go-oidc applied before, in one parse of the
// token (go-oidc and go-jose parsed it twice and its claims three times).
func (v *Verifier) verifyJWT(ctx context.Context, tok *es256Token, key [32]byte) (*Claims, error) {
	if err := v.keys.verify(ctx, tok); err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	var body struct {
		Claims
		Expiry    *float64 `json:"exp"`
		IssuedAt  *float64 `json:"iat"`
		NotBefore *float64 `json:"nbf"`
	}
	if err := json.Unmarshal(tok.payload, &body); err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	c := body.Claims
	if c.Issuer != v.issuer {
		return nil, fmt.Errorf("verify token: issued by %q, not %q", c.Issuer, v.issuer)
	}
	now := v.clock()
	if body.Expiry == nil {
		return nil, errors.New("verify token: no expiry")
	}
	c.ExpiresAt = unixTime(*body.Expiry)
	if c.ExpiresAt.Before(now) {
		return nil, fmt.Errorf("verify token: token is expired (expiry: %v)", c.ExpiresAt)
	}
	if body.NotBefore != nil && now.Add(5*time.Minute).Before(unixTime(*body.NotBefore)) {
		return nil, errors.New("verify token: token is not valid yet")
	}
	if body.IssuedAt != nil {
		c.IssuedAt = unixTime(*body.IssuedAt)
	}
	if c.Subject == "" {
		return nil, errors.New("verify token: no subject")
	}
	if v.revoked.revoked(&c) {
		return nil, fmt.Errorf("verify token: %w", ErrRevoked)
	}
	if !c.ExpiresAt.IsZero() {
		cached := c
		v.verified.put(key, &cached)
	}
	return &c, nil
}

// known reports whether raw is a token this verifier has already found
// genuine: a JWT in the cache of checked signatures or a known admin-issued
// token. It costs a hash and a map lookup and checks neither expiry nor
// revocation.
func (v *Verifier) known(raw string) bool {
	if isOpaque(raw) {
		return v.opaque != nil && v.opaque.lookup(raw) != nil
	}
	return v.verified.get(tokenKey(raw)) != nil
}

func (v *Verifier) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

// keyBufs holds buffers for tokenKey: []byte(raw) would copy every token
// (about 600 bytes) to the heap, on every request.
var keyBufs = sync.Pool{New: func() any { return new([]byte) }}

// tokenKey is the key of raw in the cache of verified tokens.
func tokenKey(raw string) [32]byte {
	b := keyBufs.Get().(*[]byte)
	*b = append((*b)[:0], raw...)
	k := sha256.Sum256(*b)
	if cap(*b) <= 8<<10 { // tokens are far smaller; do not keep a huge one
		keyBufs.Put(b)
	}
	return k
}

// maxVerified bounds the cache: about 100 bytes of claims per token.
const maxVerified = 10000

type verifiedCache struct {
	mu sync.RWMutex
	m  map[[32]byte]*Claims
}

func (c *verifiedCache) get(k [32]byte) *Claims {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[k]
}

func (c *verifiedCache) put(k [32]byte, claims *Claims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]*Claims)
	}
	if len(c.m) >= maxVerified {
		// Full: forget an arbitrary tenth. Map order is random, and a
		// forgotten token is only verified again, never wrongly accepted.
		n := 0
		for old := range c.m {
			delete(c.m, old)
			if n++; n >= maxVerified/10 {
				break
			}
		}
	}
	c.m[k] = claims
}

func (c *verifiedCache) drop(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
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

// unixTime is a NumericDate (RFC 7519 §2), seconds since the epoch; a
// fraction is dropped, as go-oidc did.
func unixTime(sec float64) time.Time { return time.Unix(int64(sec), 0) }
