package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Options configure a Limiter.
type Options struct {
	// Rate is the sustained number of tokens per second a key gets, and
	// Burst the size of its bucket (what a new or rested key may spend at
	// once). A negative Rate allows everything and keeps no state.
	Rate  rate.Limit
	Burst int
	// Idle is how long a key must go unused before it is forgotten; the map
	// is swept at most once per Idle. Zero means the time an empty bucket
	// takes to refill, plus a second: a key forgotten then is
	// indistinguishable from a new one (never, for a Rate of 0). With a
	// shorter Idle, forgetting hands a key a fresh bucket early.
	Idle time.Duration
	// MaxKeys, when positive, makes every call that finds more keys than
	// this sweep at once instead of waiting for the next Idle. It still
	// forgets idle keys only: dropping a drained bucket would let anyone
	// who floods the map with new keys reset the bucket of a key they
	// target (a user name whose password they guess).
	MaxKeys int
}

// Limiter is a token bucket per key. It is safe for concurrent use.
type Limiter[K comparable] struct {
	o Options

	mu        sync.Mutex
	buckets   map[K]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

// New returns a Limiter with options o.
func New[K comparable](o Options) *Limiter[K] {
	if o.Idle == 0 {
		o.Idle = math.MaxInt64
		if o.Rate > 0 {
			o.Idle = time.Duration(float64(o.Burst)/float64(o.Rate)*float64(time.Second)) + time.Second
		}
	}
	return &Limiter[K]{o: o, buckets: make(map[K]*bucket)}
}

// Limit is the limiter's rate in tokens per second.
func (l *Limiter[K]) Limit() rate.Limit { return l.o.Rate }

// Allow takes a token from key's bucket at now and reports whether there
// was one to take.
func (l *Limiter[K]) Allow(key K, now time.Time) bool {
	if l.o.Rate < 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.o.Rate, l.o.Burst)}
		l.buckets[key] = b
	}
	b.lastSeen = now
	return b.lim.AllowN(now, 1)
}

// Record counts an event against key at now, taking a token if there is
// one and doing nothing more if there is not: for events that have already
// happened, such as a failed login, whose refusal is decided beforehand
// with Delay.
func (l *Limiter[K]) Record(key K, now time.Time) { _ = l.Allow(key, now) }

// Delay is how long after now key's bucket will hold a whole token: zero
// when a token can be taken now. It creates no bucket and does not count as
// a use of key.
func (l *Limiter[K]) Delay(key K, now time.Time) time.Duration {
	if l.o.Rate < 0 {
		return 0
	}
	l.mu.Lock()
	b := l.buckets[key]
	l.mu.Unlock()
	if b == nil {
		return 0
	}
	tokens := b.lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	if l.o.Rate == 0 {
		return math.MaxInt64 // a bucket that never refills
	}
	return time.Duration((1 - tokens) / float64(l.o.Rate) * float64(time.Second))
}

// Len is the number of keys held.
func (l *Limiter[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sweep forgets keys idle longer than Idle, at most once per Idle (or at
// once above MaxKeys, or when the clock went back). Called with mu held.
func (l *Limiter[K]) sweep(now time.Time) {
	over := l.o.MaxKeys > 0 && len(l.buckets) > l.o.MaxKeys
	if now.Sub(l.lastSweep) <= l.o.Idle && !now.Before(l.lastSweep) && !over {
		return
	}
	for k, b := range l.buckets {
		if now.Sub(b.lastSeen) > l.o.Idle {
			delete(l.buckets, k)
		}
	}
	l.lastSweep = now
}
