package authz

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"
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
	// OnboardingCodeTTL is the lifetime of onboarding codes; default 10m.
	OnboardingCodeTTL time.Duration
	// AdminPassword is used only when the user "admin" does not exist yet;
	// empty means a random one (see Server.GeneratedAdminPassword).
	AdminPassword string
	// Onboarding is returned with every onboarding code.
	Onboarding OnboardingInfo
	// Now is used for every expiry decision; default time.Now.
	Now func() time.Time
	// Logger receives operational logs, never secrets; default discards.
	Logger *slog.Logger
}

const (
	defaultAccessTokenTTL       = 30 * time.Minute
	defaultDeviceAccessTokenTTL = time.Hour
	defaultRefreshTokenTTL      = time.Hour
	defaultOnboardingCodeTTL    = 10 * time.Minute
	defaultAPN                  = "ocfcloud"
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
	if cfg.JWKSURL == "" {
		cfg.JWKSURL = cfg.Issuer + jwksPath
	}
	if cfg.Onboarding.APN == "" {
		cfg.Onboarding.APN = defaultAPN
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg, nil
}
