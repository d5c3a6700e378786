package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ratelimit"
)

// Defaults of the budget of failed signature checks per source address
// (WithFailureBudget).
const (
	DefaultFailuresPerSecond = 20
	DefaultFailureBurst      = 100
)

// WithFailureBudget sets how many tokens that cost a signature check and
// were refused (a forged signature, an expired or revoked token: see
// Verifier.verify) Require takes from one source address: perSecond
// sustained, burst at once. Past it, Require answers 429 with Retry-After
// for any token it does not know yet, without checking it: an ES256
// verification (~150 µs of CPU) is what a flood of forged tokens costs.
// Tokens the verifier already found genuine never count and are never
// refused. Zero values take the defaults; a negative perSecond switches the
// budget off.
func WithFailureBudget(perSecond float64, burst int) Option {
	return func(o *verifierOptions) { o.failureRate, o.failureBurst = perSecond, burst }
}

func newFailureBudget(perSecond float64, burst int) *ratelimit.Limiter[string] {
	if perSecond == 0 {
		perSecond = DefaultFailuresPerSecond
	}
	if burst == 0 {
		burst = DefaultFailureBurst
	}
	// The default Idle forgets an address once its budget has refilled
	// (6 s with the defaults), so the map holds only recent offenders.
	return ratelimit.New[string](ratelimit.Options{Rate: rate.Limit(perSecond), Burst: burst})
}

type claimsKey struct{}

// FromContext returns the claims that Require stored on the request context.
// They may be shared with the verifier's cache and other requests: read
// them, never modify them.
func FromContext(ctx context.Context) *Claims {
	if c, ok := ctx.Value(claimsKey{}).(*Claims); ok {
		return c
	}
	c, _ := httpx.Local(ctx, claimsKey{}).(*Claims)
	return c
}

// Require wraps next so that it only runs for a valid token that grants every
// scope in scopes. It answers 401 with WWW-Authenticate for a missing or bad
// token (RFC 6750 §3.1) and 403 insufficient_scope for a missing scope. An
// address that has spent its budget of failed signature checks
// (WithFailureBudget) gets 429 with Retry-After, unchecked, for every token
// the verifier does not know, until the budget refills; tokens it knows go
// through, so a flood does not lock out the clients behind the same NAT or
// proxy whose tokens were verified before.
func (v *Verifier) Require(next http.Handler, scopes ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := BearerToken(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer`)
			httpx.WriteProblem(w, http.StatusUnauthorized, "a Bearer token in the Authorization header is required")
			return
		}
		ip, now := SourceIP(r), v.clock()
		// known is asked only when it matters: a token from an address
		// with budget left, that verifies, costs no second hash.
		if wait := v.failures.Delay(ip, now); wait > 0 && !v.known(raw) {
			secs := int((wait + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			httpx.WriteProblem(w, http.StatusTooManyRequests,
				fmt.Sprintf("too many invalid access tokens from this address; try again in %d s", secs))
			return
		}
		c, _, sigChecked, err := v.verify(r.Context(), raw)
		if err != nil {
			// Inside: errors.As takes the variable's address, which puts
			// it on the heap, on every request.
			var expired *ExpiredTokenError
			if errors.As(err, &expired) {
				use := expired.Use
				use.SourceIP = ip
				v.reportExpired(use)
			}
			if sigChecked {
				v.failures.Record(ip, now)
			}
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="the access token is invalid or expired"`)
			httpx.WriteProblem(w, http.StatusUnauthorized, "the access token is invalid or expired")
			return
		}
		for _, s := range scopes {
			if !c.HasScope(s) {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="insufficient_scope", scope=%q`, s))
				httpx.WriteProblem(w, http.StatusForbidden, "the access token lacks scope "+s)
				return
			}
		}
		// The request's local store (httpx.WithRequestID) takes the claims
		// without a copy of the request; a context value otherwise.
		if !httpx.SetLocal(r.Context(), claimsKey{}, c) {
			r = r.WithContext(context.WithValue(r.Context(), claimsKey{}, c))
		}
		next.ServeHTTP(w, r)
	})
}

// IsNoToken reports whether err means the request carried no token.
func IsNoToken(err error) bool { return errors.Is(err, ErrNoToken) }

// SourceIP is the TCP peer address of r: what per-address rate limits are
// keyed on and what the audit log records. X-Forwarded-For is not trusted:
// anyone could set it to get a fresh bucket per request.
func SourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
