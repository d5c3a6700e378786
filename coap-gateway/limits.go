package coapgateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"golang.org/x/time/rate"

	"github.com/ocfcloud/ocfcloud/internal/ratelimit"
)

// Limits bound what one gateway process accepts. Zero values take the
// defaults below; a negative value disables a limit where noted.
type Limits struct {
	// MaxConnections caps concurrent device connections over all listeners.
	// Keep it below the process's open-file limit. Default 100,000.
	MaxConnections int
	// MaxMessageSize is the largest CoAP message accepted; a larger one
	// closes the connection (CoAP over TCP has no way to skip it). Default
	// 256 KiB.
	MaxMessageSize uint32
	// MaxMessageSizeBeforeSignIn is the largest message accepted from a
	// connection that is not signed in (sign-up, sign-in and refresh
	// bodies are under 2 KiB; a sign-off query with a token under 4 KiB):
	// a peer that never signs in can make the gateway buffer at most this
	// much. Default 16 KiB, at most MaxMessageSize.
	MaxMessageSizeBeforeSignIn uint32
	// ConnRatePerIP is the sustained rate of new connections accepted from
	// one source address, per second, and ConnBurstPerIP the burst above it.
	// Defaults 50/s and 200; ConnRatePerIP < 0 disables the limit (devices
	// behind one NAT, load tests).
	ConnRatePerIP  float64
	ConnBurstPerIP int
	// MaxPendingPerDevice caps requests the cloud has in flight to one
	// device; more get device_busy (5.03). Default 16.
	MaxPendingPerDevice int
	// InactivityTimeout drops a connection that sent nothing (not even a
	// 7.02 Ping) for this long and marks the device offline. Devices ping
	// every 20 s. Default 60 s.
	InactivityTimeout time.Duration
	// MaxAuthFailures closes a connection after this many rejected
	// credentials (sign-up, sign-in, refresh, sign-off). Default 3.
	MaxAuthFailures int
	// SignInTimeout closes a connection that has not signed in this long
	// after it was accepted (TLS handshake and sign-up included) or after
	// its session ended (sign-out, expired token). Pings keep a connection
	// active but do not sign it in, so without this deadline a peer could
	// hold connection slots for ever. Default 60 s; negative disables.
	SignInTimeout time.Duration
	// WriteTimeout closes a connection whose peer accepts no data for this
	// long while the gateway writes to it (a device that stopped reading):
	// otherwise the write, and every command queued behind it, waits until
	// the inactivity timeout. Default 30 s; negative disables.
	WriteTimeout time.Duration
	// MaxPongDelay is how long a pong may wait for the events the device
	// caused before its ping (notifications, mostly) to be stored in
	// JetStream: a device that got its pong knows they are durable, unless
	// storing took longer than this. Default 2 s; negative: pong at once.
	MaxPongDelay time.Duration
}

func (l *Limits) setDefaults() {
	if l.MaxConnections == 0 {
		l.MaxConnections = 100_000
	}
	if l.MaxMessageSize == 0 {
		l.MaxMessageSize = 256 << 10
	}
	if l.MaxMessageSizeBeforeSignIn == 0 {
		l.MaxMessageSizeBeforeSignIn = 16 << 10
	}
	l.MaxMessageSizeBeforeSignIn = min(l.MaxMessageSizeBeforeSignIn, l.MaxMessageSize)
	if l.ConnRatePerIP == 0 {
		l.ConnRatePerIP = 50
	}
	if l.ConnBurstPerIP == 0 {
		l.ConnBurstPerIP = 200
	}
	if l.MaxPendingPerDevice == 0 {
		l.MaxPendingPerDevice = 16
	}
	if l.InactivityTimeout == 0 {
		l.InactivityTimeout = 60 * time.Second
	}
	if l.MaxAuthFailures == 0 {
		l.MaxAuthFailures = 3
	}
	if l.SignInTimeout == 0 {
		l.SignInTimeout = 60 * time.Second
	}
	if l.MaxPongDelay == 0 {
		l.MaxPongDelay = 2 * time.Second
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = 30 * time.Second
	}
}

// admission enforces MaxConnections and the per-IP rate for every listener
// of a gateway. Refused connections are closed right after accept, before a
// TLS handshake or any CoAP work is spent on them.
type admission struct {
	limits Limits
	open   atomic.Int64
	// refused counts connections closed by a limit (tests, metrics);
	// notSignedIn and stalled count connections closed by SignInTimeout and
	// WriteTimeout.
	refused     atomic.Int64
	notSignedIn atomic.Int64
	stalled     atomic.Int64

	// perIP forgets an address once its bucket has refilled (the default
	// Idle): it costs nothing to recreate, and the map must not grow with
	// every address ever seen.
	perIP *ratelimit.Limiter[netip.Addr]
}

func newAdmission(l Limits) *admission {
	return &admission{limits: l, perIP: ratelimit.New[netip.Addr](ratelimit.Options{
		Rate: rate.Limit(l.ConnRatePerIP), Burst: l.ConnBurstPerIP,
	})}
}

// admit reports whether a new connection from remote may proceed and, if so,
// counts it as open.
func (a *admission) admit(remote net.Addr) bool {
	if a.limits.ConnRatePerIP > 0 && !a.allowIP(remote) {
		a.refused.Add(1)
		return false
	}
	if a.open.Add(1) > int64(a.limits.MaxConnections) {
		a.open.Add(-1)
		a.refused.Add(1)
		return false
	}
	return true
}

func (a *admission) allowIP(remote net.Addr) bool {
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return true
	}
	return a.perIP.Allow(ap.Addr().Unmap(), time.Now())
}

// limitListener accepts TCP connections, applies admission and wraps
// admitted ones in TLS when configured; connServer accepts through it.
type limitListener struct {
	ln     net.Listener
	tls    *tls.Config
	adm    *admission
	closed atomic.Bool
}

func (l *limitListener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if l.closed.Load() {
			return nil, coapnet.ErrListenerIsClosed
		}
		c, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil, coapnet.ErrListenerIsClosed
			}
			// EMFILE and friends: the accept loop retries at once, so
			// pause here rather than spin.
			time.Sleep(10 * time.Millisecond)
			return nil, err
		}
		if !l.adm.admit(c.RemoteAddr()) {
			_ = c.Close()
			continue
		}
		var tc net.Conn = &countedConn{Conn: c, adm: l.adm}
		if l.tls != nil {
			tc = tls.Server(tc, l.tls)
		}
		return tc, nil
	}
}

func (l *limitListener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	return l.ln.Close()
}

// countedConn releases its admission slot once, when closed, and enforces
// WriteTimeout and SignInTimeout on the connection.
type countedConn struct {
	net.Conn
	adm  *admission
	once sync.Once

	mu       sync.Mutex
	deadline *time.Timer // sign-in deadline; nil while signed in
	closed   bool
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.adm.open.Add(-1)
		c.mu.Lock()
		c.closed = true
		if c.deadline != nil {
			c.deadline.Stop()
			c.deadline = nil
		}
		c.mu.Unlock()
	})
	return c.Conn.Close()
}

// Write gives up when the peer accepts nothing for WriteTimeout and closes
// the connection: a write holds the connection's write lock, so one peer
// that does not read would otherwise hold every writer of its connection
// (answers, pongs, commands) until the inactivity timeout. A slow peer that
// still accepts bytes is not dropped.
func (c *countedConn) Write(b []byte) (int, error) {
	timeout := c.adm.limits.WriteTimeout
	if timeout <= 0 {
		return c.Conn.Write(b)
	}
	written := 0
	for {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(timeout))
		n, err := c.Conn.Write(b[written:])
		written += n
		if err == nil {
			return written, nil
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return written, err
		}
		if n > 0 {
			continue // slow, but reading
		}
		c.adm.stalled.Add(1)
		_ = c.Close()
		return written, fmt.Errorf("peer accepted no data for %v: %w", timeout, err)
	}
}

// counted finds the admission wrapper under a device connection (plain or
// TLS); nil for connections that did not come through a limitListener.
func counted(nc net.Conn) *countedConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, _ := nc.(*countedConn)
	return c
}

// awaitSignIn starts the SignInTimeout of a device connection: it is closed
// unless signedIn is called first. Called when the connection is set up and
// again when its session ends while the connection stays.
func (a *admission) awaitSignIn(nc net.Conn) {
	c := counted(nc)
	if c == nil || a.limits.SignInTimeout <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.deadline != nil {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(a.limits.SignInTimeout, func() {
		c.mu.Lock()
		// Not lifted, and not a deadline replaced since this one fired.
		expired := c.deadline == t && !c.closed
		c.mu.Unlock()
		if expired {
			a.notSignedIn.Add(1)
			_ = c.Close()
		}
	})
	c.deadline = t
}

// signedIn lifts the sign-in deadline of a device connection.
func (a *admission) signedIn(nc net.Conn) {
	c := counted(nc)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deadline != nil {
		c.deadline.Stop()
		c.deadline = nil
	}
}

// repeatable are the options RFC 7252 §5.10 allows more than once.
var repeatable = map[message.OptionID]bool{
	message.IfMatch: true, message.ETag: true, message.LocationPath: true,
	message.URIPath: true, message.URIQuery: true, message.LocationQuery: true,
}

// repeatedCriticalOption finds a repeated non-repeatable critical option
// (RFC 7252 §5.4.5: treated like an unrecognized option, so the request
// fails with 4.02 Bad Option). go-coap's decoder checks unknown options and
// value lengths but not repetition: it would use the first Uri-Host or
// Accept and go on.
func repeatedCriticalOption(opts message.Options) (message.OptionID, bool) {
	for i := 1; i < len(opts); i++ { // in option order (delta encoding)
		id := opts[i].ID
		if id%2 == 1 && id == opts[i-1].ID && !repeatable[id] {
			return id, true
		}
	}
	return 0, false
}

// LoadCertPool reads PEM CA certificates (the device CA) from path.
func LoadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("device CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("device CA %s: no PEM certificate", path)
	}
	return pool, nil
}
