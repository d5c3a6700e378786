package certs

import (
	"crypto/tls"
	"time"
)

// renewRetry is how long a failed renewal waits before the next try; the
// old certificate is served meanwhile (it is still valid for weeks).
const renewRetry = time.Minute

// CurrentServerCert returns the server certificate to present now. When it
// expires within 30 days it is reissued from the CA, written to the PKI
// directory and returned, so a long-running serve never presents an
// expired certificate. Safe for concurrent use; cheap when nothing is due.
func (b *Bundle) CurrentServerCert() *tls.Certificate {
	cur := b.cur.Load()
	if cur == nil { // a Bundle not made by EnsureDev
		return &b.ServerCert
	}
	now := b.clock()()
	if now.Add(renewBefore).Before(cur.Leaf.NotAfter) || b.dir == "" {
		return cur
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur = b.cur.Load(); now.Add(renewBefore).Before(cur.Leaf.NotAfter) || now.Before(b.nextRetry) {
		return cur
	}
	renewed, err := ensureServer(b.dir, b.CloudID, b.CACert, b.CAKey, b.sans, now)
	if err != nil {
		b.nextRetry = now.Add(renewRetry)
		return cur
	}
	if !now.Add(renewBefore).Before(renewed.Leaf.NotAfter) {
		// Capped by a CA that itself expires soon (re-dated on the next
		// start): do not reissue on every handshake.
		b.nextRetry = now.Add(time.Hour)
	}
	b.cur.Store(&renewed)
	return &renewed
}
