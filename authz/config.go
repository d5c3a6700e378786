package authz

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

// OnboardingInfo is what a device needs besides its code to reach the cloud;
// it is returned with every onboarding code.
type OnboardingInfo struct {
	APN        string // authorization provider name; "ocfcloud" when empty
	CIS        string // coap+tcp:// URL of the gateway
	CISSecure  string // coaps+tcp:// URL of the gateway
	CloudID    string // sid, the cloud's UUID
	CloudCAPEM string // the CA that signs the gateway's certificate
}

// Config configures the authorization server. Zero values get the defaults
// documented on each field.
type Config struct {
	// Issuer is the public base URL, e.g. "http://127.0.0.1:8080", without a
	// trailing slash. It is the iss claim and the base of every URL in the
	// discovery document.
	Issuer string
	// JWKSURL is where the in-process verifier fetches the signing keys;
	// default Issuer+"/.well-known/jwks.json".
	JWKSURL string
	// AccessTokenTTL is the lifetime of user access tokens; default 30m.
	AccessTokenTTL time.Duration
	// DeviceAccessTokenTTL is the lifetime of device access tokens; default 1h.
	DeviceAccessTokenTTL time.Duration
	// RefreshTokenTTL is the sliding lifetime of user refresh tokens; default
	// 1h. Device refresh tokens never expire; they are rotated on use.
	RefreshTokenTTL time.Duration
	// RefreshReuseGrace is how long after a rotation the old refresh token
	// may be presented again without revoking its chain (a concurrent retry
	// of the client); default 10s, negative means none.
	RefreshReuseGrace time.Duration
	// RefreshLimitPerClient and RefreshLimitPerUser bound the live refresh
	// tokens of a user with one client and across clients; past a limit
	// the oldest stops working. Defaults 10 and 50. Device tokens are exempt.
	RefreshLimitPerClient int
	RefreshLimitPerUser   int
	// OnboardingCodeTTL is the lifetime of onboarding codes; default 10m.
	OnboardingCodeTTL time.Duration
	// AdminPassword is used only when the user "admin" does not exist yet;
	// empty means a random one (see Server.GeneratedAdminPassword).
	AdminPassword string
	// Onboarding is returned with every onboarding code.
	Onboarding OnboardingInfo
	// PortalRedirectURIs are where the built-in portal client may be sent
	// back to; default Issuer+"/", where package portal serves it. They are
	// the operator's, so plain http on other hosts is allowed here (an
	// issuer on a LAN address), unlike for app registrations.
	PortalRedirectURIs []string
	// Now is used for every expiry decision; default time.Now.
	Now func() time.Time
	// DatabaseUp, when set, reports whether the database answered its last
	// health check; while it is false the token endpoint (for the grants
	// that need the database), revocation and the Bearer REST routes answer
	// 503 with Retry-After at once.
	DatabaseUp func() bool
	// Logger receives operational logs, never secrets; default discards.
	Logger *slog.Logger

	// NATS, when set, carries revocations (auth.RevokedSubject) to every
	// resource server and app changes to other authz replicas. Without it
	// revocations still reach this process's verifier and, through MongoDB,
	// every verifier that starts later.
	NATS *nats.Conn
	// Verifier checks Bearer tokens on authz's own endpoints. Pass the
	// process's shared verifier so a revocation takes effect in it at once;
	// default a new one following NATS and the database.
	Verifier *auth.Verifier

	// TokenRateIP and TokenBurstIP limit token, revocation and introspection
	// requests per source IP; default 20/s with bursts of 40. TokenRateClient
	// and TokenBurstClient limit them per authenticated client; default 50/s
	// with bursts of 100. A negative rate switches the limit off (benchmarks).
	TokenRateIP      float64
	TokenBurstIP     int
	TokenRateClient  float64
	TokenBurstClient int
}

const (
	defaultAccessTokenTTL       = 30 * time.Minute
	defaultDeviceAccessTokenTTL = time.Hour
	defaultRefreshTokenTTL      = time.Hour
	defaultOnboardingCodeTTL    = 10 * time.Minute
	defaultAPN                  = "ocfcloud"

	defaultRefreshReuseGrace     = 10 * time.Second
	defaultRefreshLimitPerClient = 10
	defaultRefreshLimitPerUser   = 50
)

// withDefaults returns cfg with defaults filled in, or every problem found.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	u, err := url.Parse(cfg.Issuer)
	switch {
	case cfg.Issuer == "":
		errs = append(errs, errors.New("issuer is required"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("issuer %q is not an absolute http(s) URL", cfg.Issuer))
	case strings.HasSuffix(cfg.Issuer, "/"):
		errs = append(errs, fmt.Errorf("issuer %q must not end with a slash", cfg.Issuer))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("issuer %q must not have a query or fragment", cfg.Issuer))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"access token TTL", &cfg.AccessTokenTTL, defaultAccessTokenTTL},
		{"device access token TTL", &cfg.DeviceAccessTokenTTL, defaultDeviceAccessTokenTTL},
		{"refresh token TTL", &cfg.RefreshTokenTTL, defaultRefreshTokenTTL},
		{"onboarding code TTL", &cfg.OnboardingCodeTTL, defaultOnboardingCodeTTL},
	} {
		switch {
		case *d.v < 0:
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, *d.v))
		case *d.v == 0:
			*d.v = d.def
		case *d.v < time.Second:
			errs = append(errs, fmt.Errorf("%s must be at least 1s, got %s", d.name, *d.v))
		}
	}
	if cfg.AdminPassword != "" && len(cfg.AdminPassword) < minPasswordLen {
		errs = append(errs, fmt.Errorf("admin password must have at least %d characters", minPasswordLen))
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("authz config: %w", err)
	}
	switch {
	case cfg.RefreshReuseGrace == 0:
		cfg.RefreshReuseGrace = defaultRefreshReuseGrace
	case cfg.RefreshReuseGrace < 0:
		cfg.RefreshReuseGrace = 0
	}
	if cfg.RefreshLimitPerClient <= 0 {
		cfg.RefreshLimitPerClient = defaultRefreshLimitPerClient
	}
	if cfg.RefreshLimitPerUser <= 0 {
		cfg.RefreshLimitPerUser = defaultRefreshLimitPerUser
	}
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = cfg.Issuer + jwksPath
	}
	if len(cfg.PortalRedirectURIs) == 0 {
		cfg.PortalRedirectURIs = []string{cfg.Issuer + "/"}
	}
	if cfg.Onboarding.APN == "" {
		cfg.Onboarding.APN = defaultAPN
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, l := range []struct {
		r      *float64
		b      *int
		dr     float64
		dburst int
	}{{&cfg.TokenRateIP, &cfg.TokenBurstIP, 20, 40}, {&cfg.TokenRateClient, &cfg.TokenBurstClient, 50, 100}} {
		if *l.r == 0 {
			*l.r = l.dr
		}
		if *l.b <= 0 {
			*l.b = l.dburst
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg, nil
}
