package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

// App types (seeds 000 and 003).
const (
	// AppWeb is a confidential client acting for a user who logs in: password
	// grant and refresh tokens.
	AppWeb = "web"
	// AppNative is a confidential client acting as the user who registered
	// it: client credentials, no refresh token.
	AppNative = "native"
	// AppSPA is a public client without a secret: refresh tokens; the
	// authorization code flow with PKCE is what it is for.
	AppSPA = "spa"
)

const collApps = "apps"

const (
	maxAppsPerUser   = 100
	maxAppNameBytes  = 100
	maxAppNotesBytes = 4000
	maxRedirectURIs  = 20
	maxRedirectBytes = 2000
)

// appDoc is an app registration. The client secret is stored twice: as a
// SHA-256 hash, which is all that verification uses, and sealed with the
// secret box so the owner can reveal it.
type appDoc struct {
	ID           string    `bson:"_id"` // the client id
	OwnerID      string    `bson:"owner_id"`
	Name         string    `bson:"name"`
	Notes        string    `bson:"notes"`
	Type         string    `bson:"type"`
	RedirectURIs []string  `bson:"redirect_uris"`
	Scopes       []string  `bson:"scopes"`
	SecretHash   string    `bson:"secret_hash,omitempty"`
	SecretSealed []byte    `bson:"secret_sealed,omitempty"`
	CreatedAt    time.Time `bson:"created_at"`
	UpdatedAt    time.Time `bson:"updated_at"`
	// TokensValidAfter: tokens of this client issued at or before it are
	// revoked (secret rotation); new tokens get a later iat.
	TokensValidAfter time.Time `bson:"tokens_valid_after,omitempty"`
}

// errInvalidApp wraps every validation problem of an app registration.
var errInvalidApp = errors.New("invalid app registration")

// grantableScopes are the scopes an app may be allowed.
var grantableScopes = append([]string{scopeOpenID, auth.ScopeOfflineAccess}, apiScopes...)

// defaultAppScopes are the allowed scopes of an app registered without any.
func defaultAppScopes(appType string) []string {
	if appType == AppNative {
		return slices.Clone(apiScopes)
	}
	return slices.Clone(grantableScopes)
}

// validateApp normalizes and checks the user-editable fields of d, reporting
// every problem at once.
func validateApp(d *appDoc) error {
	var errs []error
	d.Name = strings.TrimSpace(d.Name)
	if d.Name == "" || len(d.Name) > maxAppNameBytes || !utf8.ValidString(d.Name) || strings.ContainsFunc(d.Name, isControl) {
		errs = append(errs, fmt.Errorf("name must be 1 to %d bytes of printable UTF-8", maxAppNameBytes))
	}
	if len(d.Notes) > maxAppNotesBytes || !utf8.ValidString(d.Notes) {
		errs = append(errs, fmt.Errorf("notes must be at most %d bytes of UTF-8", maxAppNotesBytes))
	}
	if !slices.Contains([]string{AppWeb, AppNative, AppSPA}, d.Type) {
		errs = append(errs, fmt.Errorf("type must be %q, %q or %q", AppWeb, AppNative, AppSPA))
	}
	if len(d.RedirectURIs) > maxRedirectURIs {
		errs = append(errs, fmt.Errorf("at most %d redirect URIs", maxRedirectURIs))
	}
	seen := map[string]bool{}
	for _, u := range d.RedirectURIs {
		if err := ValidateRedirectURI(u); err != nil {
			errs = append(errs, err)
		} else if seen[u] {
			errs = append(errs, fmt.Errorf("redirect URI %.200q is listed twice", u))
		}
		seen[u] = true
	}
	if d.Type == AppSPA && len(d.RedirectURIs) == 0 {
		errs = append(errs, errors.New("a spa app needs at least one redirect URI"))
	}
	if d.Scopes == nil {
		d.Scopes = defaultAppScopes(d.Type)
	}
	scopes, err := ParseScope(strings.Join(d.Scopes, " "))
	if err != nil {
		errs = append(errs, err)
	}
	for _, sc := range scopes {
		if !slices.Contains(grantableScopes, sc) {
			errs = append(errs, fmt.Errorf("scope %.80q cannot be allowed", sc))
		}
	}
	if d.Type == AppNative && slices.Contains(scopes, auth.ScopeOfflineAccess) {
		errs = append(errs, errors.New("native apps get no refresh tokens, so offline_access cannot be allowed"))
	}
	if d.Type == AppNative && slices.Contains(scopes, scopeOpenID) {
		errs = append(errs, errors.New("native apps get no ID tokens, so openid cannot be allowed"))
	}
	// For apps that act for a person, the list chooses API scopes; signing
	// in (openid) and staying signed in (offline_access) are always allowed,
	// as the portal offers only API scopes.
	if d.Type == AppWeb || d.Type == AppSPA {
		for _, sc := range []string{scopeOpenID, auth.ScopeOfflineAccess} {
			if !slices.Contains(scopes, sc) {
				scopes = append(scopes, sc)
			}
		}
	}
	d.Scopes = scopes
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errInvalidApp, err)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// ValidateRedirectURI accepts an absolute https URL, or an http URL on the
// loopback host (localhost, 127.0.0.1, [::1]; RFC 8252 §7.3), without a
// fragment or user info. Matching at the authorization endpoint is exact.
func ValidateRedirectURI(raw string) error {
	bad := func(why string) error { return fmt.Errorf("redirect URI %.200q: %s", raw, why) }
	if raw == "" || len(raw) > maxRedirectBytes {
		return bad(fmt.Sprintf("must be 1 to %d bytes", maxRedirectBytes))
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }) {
		return bad("must not contain spaces, control characters or backslashes")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return bad("not a URL")
	case !u.IsAbs() || u.Opaque != "":
		return bad("must be absolute")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return bad("must not have a fragment")
	case u.User != nil:
		return bad("must not carry user info")
	case u.Host == "" || u.Hostname() == "":
		return bad("must have a host")
	}
	switch u.Scheme {
	case "https":
	case "http":
		h := u.Hostname()
		if h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return bad("http is allowed only for localhost, 127.0.0.1 and [::1]")
		}
	default:
		return bad("scheme must be https (or http on loopback)")
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return bad("bad port")
		}
	}
	return nil
}

// ParseScope splits an RFC 6749 §3.3 scope string: tokens of printable ASCII
// except '"' and '\', separated by single spaces (several are tolerated),
// duplicates removed, order kept.
func ParseScope(s string) ([]string, error) {
	if len(s) > 2000 {
		return nil, errors.New("scope is longer than 2000 bytes")
	}
	out := []string{}
	for _, tok := range strings.Split(s, " ") {
		if tok == "" {
			continue
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
				return nil, fmt.Errorf("scope %.80q has a character RFC 6749 does not allow", tok)
			}
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out, nil
}

// client is what the token endpoint knows about a client: a built-in one or
// an app registration. It is immutable once built; the cache swaps whole
// values.
type client struct {
	id               string
	name             string
	appType          string // "" for built-in clients
	ownerID          string
	public           bool
	secretHash       [sha256.Size]byte
	grants           []string
	scopes           []string // allowed; every grantable scope for built-ins
	redirectURIs     []string
	tokensValidAfter time.Time
	// firstParty clients are ocfcloud's own: no consent page, and their
	// user tokens may use the management API.
	firstParty bool
}

var builtinClients = map[string]*client{
	clientCLI:    {id: clientCLI, public: true, grants: []string{grantPassword, grantRefreshToken}, scopes: grantableScopes, firstParty: true},
	clientDevice: {id: clientDevice, public: true, grants: []string{grantAuthorizationCode, grantRefreshToken}, scopes: grantableScopes},
}

// grantsOf lists the grant types an app type may use.
func grantsOf(appType string) []string {
	switch appType {
	case AppWeb:
		return []string{grantPassword, grantAuthorizationCode, grantRefreshToken}
	case AppNative:
		return []string{grantClientCredentials}
	case AppSPA:
		return []string{grantAuthorizationCode, grantRefreshToken}
	}
	return nil
}

func clientFromApp(d *appDoc) *client {
	c := &client{
		id:               d.ID,
		name:             d.Name,
		appType:          d.Type,
		ownerID:          d.OwnerID,
		public:           d.Type == AppSPA,
		grants:           grantsOf(d.Type),
		scopes:           d.Scopes,
		redirectURIs:     d.RedirectURIs,
		tokensValidAfter: d.TokensValidAfter,
	}
	if b, err := hex.DecodeString(d.SecretHash); err == nil && len(b) == sha256.Size {
		copy(c.secretHash[:], b)
	}
	return c
}

// clientCacheTTL bounds how stale a cached client can be on a replica that
// missed a change broadcast (or runs without NATS).
const clientCacheTTL = time.Minute

// clientCache keeps app registrations in memory, so client authentication
// on the token endpoint needs no database round trip.
type clientCache struct {
	mu      sync.RWMutex
	entries map[string]clientEntry
}

type clientEntry struct {
	c        *client
	loadedAt time.Time
}

func newClientCache() *clientCache { return &clientCache{entries: make(map[string]clientEntry)} }

func (cc *clientCache) get(id string, now time.Time) *client {
	cc.mu.RLock()
	e, ok := cc.entries[id]
	cc.mu.RUnlock()
	if !ok || now.Sub(e.loadedAt) > clientCacheTTL || now.Before(e.loadedAt) {
		return nil
	}
	return e.c
}

func (cc *clientCache) put(c *client, now time.Time) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(cc.entries) > 100_000 { // unbounded growth guard; rebuilt lazily
		clear(cc.entries)
	}
	cc.entries[c.id] = clientEntry{c: c, loadedAt: now}
}

func (cc *clientCache) forget(id string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	delete(cc.entries, id)
}

// errUnknownClient means no built-in client or app has that id.
var errUnknownClient = errors.New("unknown client")

// lookupClient returns the client with id from the built-ins, the cache or
// the database.
func (s *Server) lookupClient(ctx context.Context, id string) (*client, error) {
	if c := builtinClients[id]; c != nil {
		return c, nil
	}
	if id == clientPortal {
		return s.portal, nil
	}
	now := s.now()
	if c := s.clients.get(id, now); c != nil {
		return c, nil
	}
	if len(id) > 100 {
		return nil, errUnknownClient
	}
	var d appDoc
	err := s.apps.FindOne(ctx, bson.M{"_id": id}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, errUnknownClient
	}
	if err != nil {
		return nil, fmt.Errorf("find client: %w", err)
	}
	c := clientFromApp(&d)
	s.clients.put(c, now)
	return c, nil
}

// userCacheTTL bounds how long a replica that missed a broadcast may treat a
// disabled user as active on the client credentials path.
const userCacheTTL = 30 * time.Second

// userCache keeps users for the client credentials grant, whose rate does
// not allow a database read per request.
type userCache struct {
	mu      sync.RWMutex
	entries map[string]userEntry
}

type userEntry struct {
	u        *user
	loadedAt time.Time
}

func newUserCache() *userCache { return &userCache{entries: make(map[string]userEntry)} }

func (uc *userCache) forget(id string) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	delete(uc.entries, id)
}

// activeUserCached is activeUser through the cache.
func (s *Server) activeUserCached(ctx context.Context, id string) (*user, error) {
	now := s.now()
	s.userCache.mu.RLock()
	e, ok := s.userCache.entries[id]
	s.userCache.mu.RUnlock()
	if ok && now.Sub(e.loadedAt) <= userCacheTTL && !now.Before(e.loadedAt) {
		if e.u.Disabled {
			return nil, errUnauthenticated
		}
		return e.u, nil
	}
	var u user
	err := s.users.FindOne(ctx, bson.M{"_id": id}).Decode(&u)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return nil, errUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("find user %s: %w", id, err)
	}
	s.userCache.mu.Lock()
	if len(s.userCache.entries) > 100_000 {
		clear(s.userCache.entries)
	}
	s.userCache.entries[id] = userEntry{u: &u, loadedAt: now}
	s.userCache.mu.Unlock()
	if u.Disabled {
		return nil, errUnauthenticated
	}
	return &u, nil
}

// newPortalClient is the built-in client of the web portal; its redirect
// URIs depend on the issuer.
func newPortalClient(redirectURIs []string) *client {
	return &client{
		id: clientPortal, name: "ocfcloud portal", public: true, firstParty: true,
		grants: []string{grantAuthorizationCode, grantRefreshToken}, scopes: grantableScopes, redirectURIs: redirectURIs,
	}
}
