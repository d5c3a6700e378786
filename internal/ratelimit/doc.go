// Package ratelimit owns the keyed token bucket that every rate limit of
// ocfcloud is built on: one golang.org/x/time/rate bucket per key (a source
// address, a client id, a user name), created on first use and forgotten
// once its key has been idle for a while, so the map does not grow with
// every key ever seen. Callers pass the time, so limits are tested without
// sleeping. It knows nothing of HTTP or CoAP: choosing the key, and the
// answer to a refused request, stay with the caller.
package ratelimit
