package authz

import (
	"net/http"
	"time"

	"golang.org/x/time/rate"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/ratelimit"
)

// The token endpoint checks passwords with argon2id, so it is rate limited
// per client IP to keep guessing slow and the CPU available, and per client
// so one app cannot starve the others (seed 002).
const limiterIdle = 3 * time.Minute

// ipLimiter is a token bucket per key (a source IP or a client id) that
// answers refusals in the OAuth error form. A negative rate allows
// everything.
type ipLimiter struct {
	keys *ratelimit.Limiter[string]
}

func newIPLimiter(r rate.Limit, burst int) *ipLimiter {
	return &ipLimiter{keys: ratelimit.New[string](ratelimit.Options{Rate: r, Burst: burst, Idle: limiterIdle})}
}

// allow takes a token from key's bucket at now, or returns the error to send.
func (l *ipLimiter) allow(key string, now time.Time) *oauthError {
	if l.keys.Allow(key, now) {
		return nil
	}
	return slowDown(time.Duration(float64(time.Second) / float64(l.keys.Limit())))
}

// clientIP is the peer address; X-Forwarded-For is not trusted.
func clientIP(r *http.Request) string { return auth.SourceIP(r) }
