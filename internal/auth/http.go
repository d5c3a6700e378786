package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

type claimsKey struct{}

// FromContext returns the claims that Require stored on the request context.
func FromContext(ctx context.Context) *Claims {
	c, _ := ctx.Value(claimsKey{}).(*Claims)
	return c
}

// Require wraps next so that it only runs for a valid token that grants every
// scope in scopes. It answers 401 with WWW-Authenticate for a missing or bad
// token (RFC 6750 §3.1) and 403 insufficient_scope for a missing scope.
func (v *Verifier) Require(next http.Handler, scopes ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := BearerToken(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer`)
			httpx.WriteProblem(w, http.StatusUnauthorized, "a Bearer token in the Authorization header is required")
			return
		}
		c, err := v.Verify(r.Context(), raw)
		var expired *ExpiredTokenError
		if errors.As(err, &expired) {
			use := expired.Use
			use.SourceIP = sourceIP(r)
			v.reportExpired(use)
		}
		if err != nil {
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
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
	})
}

// IsNoToken reports whether err means the request carried no token.
func IsNoToken(err error) bool { return errors.Is(err, ErrNoToken) }

// sourceIP is the peer address of r, for the audit log.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
