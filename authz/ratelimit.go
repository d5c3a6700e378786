package authz

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The token endpoint checks passwords with argon2id, so it is rate limited
// per client IP to keep guessing slow and the CPU available, and per client
// so one app cannot starve the others (seed 002).
const limiterIdle = 3 * time.Minute

// ipLimiter is a token bucket per key (a source IP or a client id). A
// negative rate allows everything.
type ipLimiter struct {
	rate  rate.Limit
	burst int

	mu        sync.Mutex
	byIP      map[string]*ipBucket
	lastSweep time.Time
}

type ipBucket struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

func newIPLimiter(r rate.Limit, burst int) *ipLimiter {
	return &ipLimiter{rate: r, burst: burst, byIP: make(map[string]*ipBucket)}
}

// allow takes a token from ip's bucket at now, or returns the error to send.
func (l *ipLimiter) allow(ip string, now time.Time) *oauthError {
	if l.rate < 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > limiterIdle || now.Before(l.lastSweep) {
		for k, b := range l.byIP {
			if now.Sub(b.lastSeen) > limiterIdle {
				delete(l.byIP, k)
			}
		}
		l.lastSweep = now
	}
	b := l.byIP[ip]
	if b == nil {
		b = &ipBucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.byIP[ip] = b
	}
	b.lastSeen = now
	if b.lim.AllowN(now, 1) {
		return nil
	}
	return slowDown(time.Duration(float64(time.Second) / float64(l.rate)))
}

// clientIP is the peer address. X-Forwarded-For is not trusted: anyone could
// set it to get a fresh bucket per request.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
