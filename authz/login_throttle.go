package authz

import (
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
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
	mu        sync.Mutex
	users     map[string]*ipBucket
	ips       map[string]*ipBucket
	lastSweep time.Time
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{users: make(map[string]*ipBucket), ips: make(map[string]*ipBucket)}
}

func throttleKey(username string) string { return strings.ToLower(username) }

// wait returns how long the caller must wait before trying username from
// ip, or 0 if it may try now.
func (t *loginThrottle) wait(username, ip string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d time.Duration
	for _, b := range []*ipBucket{t.users[throttleKey(username)], t.ips[ip]} {
		if b == nil {
			continue
		}
		if tokens := b.lim.TokensAt(now); tokens < 1 {
			need := time.Duration((1 - tokens) / float64(b.lim.Limit()) * float64(time.Second))
			d = max(d, need)
		}
	}
	return d
}

// failed records a failed login.
func (t *loginThrottle) failed(username, ip string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) > loginThrottleIdle || now.Before(t.lastSweep) || len(t.users) > loginThrottleMaxNames {
		for _, m := range []map[string]*ipBucket{t.users, t.ips} {
			for k, b := range m {
				if now.Sub(b.lastSeen) > loginThrottleIdle {
					delete(m, k)
				}
			}
		}
		t.lastSweep = now
	}
	for _, e := range []struct {
		m     map[string]*ipBucket
		key   string
		every time.Duration
		burst int
	}{
		{t.users, throttleKey(username), loginUserRefill, loginFailuresPerUser},
		{t.ips, ip, loginIPRefill, loginFailuresPerIP},
	} {
		b := e.m[e.key]
		if b == nil {
			b = &ipBucket{lim: rate.NewLimiter(rate.Every(e.every), e.burst)}
			e.m[e.key] = b
		}
		b.lastSeen = now
		b.lim.AllowN(now, 1)
	}
}
