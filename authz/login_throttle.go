package authz

import (
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/ocfcloud/ocfcloud/internal/ratelimit"
)

// Login brute-force throttling: failed logins drain a bucket per username
// and one per source IP; while either is empty, logins for that name or from
// that address are refused before the password is checked. A success does
// not refill: it would let a guesser interleave its own valid login. The
// buckets are per process; with several replicas the effective limit
// multiplies, which still makes online guessing hopeless.
const (
	loginFailuresPerUser  = 5
	loginUserRefill       = time.Minute // one more try per minute
	loginFailuresPerIP    = 20
	loginIPRefill         = 10 * time.Second
	loginThrottleIdle     = time.Hour
	loginThrottleMaxNames = 100_000
)

type loginThrottle struct {
	users *ratelimit.Limiter[string]
	ips   *ratelimit.Limiter[string]
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{
		// Anyone can make up names; beyond loginThrottleMaxNames every
		// failure sweeps out the names idle for an hour, not once an hour.
		users: ratelimit.New[string](ratelimit.Options{
			Rate: rate.Every(loginUserRefill), Burst: loginFailuresPerUser,
			Idle: loginThrottleIdle, MaxKeys: loginThrottleMaxNames,
		}),
		ips: ratelimit.New[string](ratelimit.Options{
			Rate: rate.Every(loginIPRefill), Burst: loginFailuresPerIP, Idle: loginThrottleIdle,
		}),
	}
}

func throttleKey(username string) string { return strings.ToLower(username) }

// wait returns how long the caller must wait before trying username from
// ip, or 0 if it may try now.
func (t *loginThrottle) wait(username, ip string, now time.Time) time.Duration {
	return max(t.users.Delay(throttleKey(username), now), t.ips.Delay(ip, now))
}

// failed records a failed login.
func (t *loginThrottle) failed(username, ip string, now time.Time) {
	t.users.Record(throttleKey(username), now)
	t.ips.Record(ip, now)
}
