package coapgateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/leases"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// Config configures the gateway.
type Config struct {
	// Addr is the coap+tcp listen address ("" disables it).
	Addr string
	// TLSAddr is the coaps+tcp listen address ("" disables it); TLS must be set.
	TLSAddr string
	// TLS holds the server certificate (CN uuid:<sid>) and, in ClientCAs,
	// the device CA. The gateway enforces TLS 1.2+ and a verified client
	// certificate whatever ClientAuth says, and checks its uuid:<di>
	// against the di of sign-up, sign-in, refresh and sign-off.
	TLS *tls.Config
	// NATS carries events, registry queries and commands
	// (commands.Subject(di) while the device is signed in).
	NATS *nats.Conn
	// TokenURL is authz's token endpoint.
	TokenURL string
	// Verifier checks device access tokens at sign-in.
	Verifier *auth.Verifier
	// HTTPClient talks to authz; default has a 10 s timeout.
	HTTPClient *http.Client
	// Limits protect the gateway from floods and hostile peers.
	Limits
	// BackendTimeout bounds every call to authz, NATS and the registry made
	// while a device waits for an answer. Default 10 s.
	BackendTimeout time.Duration
	// DeviceTimeout bounds requests the gateway sends to a device when the
	// command names no timeout. Default 10 s.
	DeviceTimeout time.Duration
	// MaxDeviceTimeout caps the timeout a command may ask for. Default 60 s.
	MaxDeviceTimeout time.Duration
	// ID names this gateway instance in its liveness lease and in the
	// device_online events of its devices; default a random UUID.
	ID string
	// LeaseTTL is how long the lease lives without renewal; the registry
	// marks the devices of an instance whose lease expired offline. Default
	// leases.DefaultTTL.
	LeaseTTL time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
}

// Gateway serves device connections.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	authz    *authzClient
	pub      *events.Publisher
	registry *registryapi.Client
	seq      *events.Sequencer

	servers   []*connServer
	listeners []net.Addr
	wg        sync.WaitGroup
	// sessionsWG counts sessions whose last events are not yet published.
	sessionsWG sync.WaitGroup

	adm     *admission
	cmd     commandRouter
	workers *workerPool // runs the sessions' request jobs

	mu       sync.Mutex
	sessions map[*deviceConn]*session

	ready atomic.Bool

	stopLease context.CancelFunc
	leaseDone <-chan struct{}

	stopSweep context.CancelFunc
}

// New starts listening on the configured addresses.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		// Every sign-up and refresh is a call to authz; the default two idle
		// connections per host would open and close a TCP connection per
		// call under load.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	cfg.Limits.setDefaults()
	if cfg.BackendTimeout == 0 {
		cfg.BackendTimeout = 10 * time.Second
	}
	if cfg.DeviceTimeout == 0 {
		cfg.DeviceTimeout = 10 * time.Second
	}
	if cfg.MaxDeviceTimeout == 0 {
		cfg.MaxDeviceTimeout = 60 * time.Second
	}
	cfg.DeviceTimeout = min(cfg.DeviceTimeout, cfg.MaxDeviceTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NATS == nil || cfg.Verifier == nil || cfg.TokenURL == "" {
		return nil, errors.New("coap-gateway: NATS, Verifier and TokenURL are required")
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("coap-gateway: %w", err)
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("service", "coap-gateway"),
		authz:    &authzClient{tokenURL: cfg.TokenURL, http: cfg.HTTPClient},
		pub:      events.NewPublisher(js),
		registry: registryapi.NewClient(cfg.NATS),
		seq:      events.NewSequencer(cfg.Now),
		sessions: map[*deviceConn]*session{},
		adm:      newAdmission(cfg.Limits),
		workers:  newWorkerPool(5 * time.Second),
	}
	if g.cfg.ID == "" {
		g.cfg.ID = uuid.NewString()
	}
	// The lease exists before any device can be online through this
	// instance, so the registry never sees a device of an unknown gateway.
	leaseKV, err := leases.Open(ctx, js, cfg.LeaseTTL, 0, false)
	if err != nil {
		return nil, fmt.Errorf("coap-gateway: %w", err)
	}
	leaseCtx, stopLease := context.WithCancel(context.Background())
	if g.leaseDone, err = leases.Keep(leaseCtx, leaseKV, g.cfg.ID, cfg.LeaseTTL, g.log, g.announceOnline); err != nil {
		stopLease()
		return nil, fmt.Errorf("coap-gateway: %w", err)
	}
	g.stopLease = stopLease
	g.log = g.log.With("gateway_id", g.cfg.ID)
	if err := g.startCommands(); err != nil {
		g.Close()
		return nil, err
	}
	g.startSweep()
	if cfg.Addr != "" {
		if err := g.listen(cfg.Addr, nil); err != nil {
			g.Close()
			return nil, err
		}
	}
	if cfg.TLSAddr != "" {
		tcfg, err := deviceTLSConfig(cfg.TLS)
		if err != nil {
			g.Close()
			return nil, err
		}
		if err := g.listen(cfg.TLSAddr, tcfg); err != nil {
			g.Close()
			return nil, err
		}
	}
	g.ready.Store(true)
	return g, nil
}

// deviceTLSConfig enforces OCF mutual TLS on the coaps+tcp listener: TLS 1.2
// or 1.3 and a client certificate that chains to the device CA (ClientCAs).
func deviceTLSConfig(c *tls.Config) (*tls.Config, error) {
	if c == nil {
		return nil, errors.New("coap-gateway: TLSAddr needs TLS")
	}
	if c.ClientCAs == nil {
		return nil, errors.New("coap-gateway: TLS needs ClientCAs (the device CA)")
	}
	if len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil {
		return nil, errors.New("coap-gateway: TLS needs a server certificate")
	}
	c = c.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	return c, nil
}

func (g *Gateway) listen(addr string, tlsCfg *tls.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("coap-gateway listen %s: %w", addr, err)
	}
	g.serve(&limitListener{ln: ln, tls: tlsCfg, adm: g.adm}, ln.Addr())
	return nil
}

func (g *Gateway) serve(l *limitListener, addr net.Addr) {
	routes := map[string]handlerFunc{
		ocf.PathAccount:      g.handleAccount,
		ocf.PathSession:      g.handleSession,
		ocf.PathTokenRefresh: g.handleTokenRefresh,
		ocf.PathRD:           g.handleRD,
		ocf.PathRes:          g.handleRes,
	}
	srv := g.newConnServer(l, routes, g.handleNotFound)
	g.servers = append(g.servers, srv)
	g.listeners = append(g.listeners, addr)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		srv.serve()
	}()
	g.log.Info("coap listener ready", "addr", addr.String())
}

// startSweep checks every connection once a second, all of them on one
// goroutine per gateway instead of a timer per connection (~190 bytes per
// idle device): see sweep.
func (g *Gateway) startSweep() {
	ctx, cancel := context.WithCancel(context.Background())
	g.stopSweep = cancel
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case wall := <-t.C:
				g.sweep(g.cfg.Now(), wall)
			}
		}
	}()
}

// sweep closes the connections that sent nothing, not even a ping, since
// InactivityTimeout before wall (the clock lastRead uses), and signs out the
// sessions whose access token has expired at now (the configured clock).
func (g *Gateway) sweep(now, wall time.Time) {
	limit := g.cfg.InactivityTimeout
	before := wall.Add(-limit).UnixNano()
	var idle []*deviceConn
	var due []*session
	g.mu.Lock()
	for c, s := range g.sessions {
		if limit > 0 && c.lastRead.Load() < before {
			idle = append(idle, c)
			continue
		}
		s.mu.Lock()
		if s.expiredLocked(now) {
			due = append(due, s)
		}
		s.mu.Unlock()
	}
	g.mu.Unlock()
	for _, c := range idle {
		g.log.Info("closing inactive device connection", "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
	for _, s := range due {
		s.expireIfDue(now)
	}
}

// Addrs returns the bound listener addresses, coap+tcp first.
func (g *Gateway) Addrs() []net.Addr { return g.listeners }

// Ready reports whether the gateway accepts devices.
func (g *Gateway) Ready() bool { return g.ready.Load() && g.cfg.NATS.IsConnected() }

// Close stops the listeners and closes every device connection.
func (g *Gateway) Close() {
	g.ready.Store(false)
	for _, s := range g.servers {
		s.stop()
	}
	if g.stopSweep != nil {
		g.stopSweep()
	}
	g.wg.Wait()
	g.stopCommands()
	// Let closed sessions publish their offline events before NATS goes away.
	done := make(chan struct{})
	go func() { g.sessionsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.log.Warn("closing with device events still unpublished")
	}
	// Last: a clean stop removes the lease; devices whose offline event did
	// not make it are then marked offline by the registry.
	if g.stopLease != nil {
		g.stopLease()
		<-g.leaseDone
		g.stopLease = nil
	}
}

// onNewConn gives a new connection its session.
func (g *Gateway) onNewConn(c *deviceConn) {
	// Done when the session is closed and its last event published.
	g.sessionsWG.Add(1)
	s := newSession(g, c)
	c.s = s
	g.mu.Lock()
	g.sessions[c] = s
	g.mu.Unlock()
}

// onConnClosed ends the session of a connection that is gone.
func (g *Gateway) onConnClosed(c *deviceConn) {
	g.mu.Lock()
	delete(g.sessions, c)
	g.mu.Unlock()
	c.s.close()
}

// maxQueryOption is the longest Uri-Query option the gateway accepts. RFC
// 7252 caps it at 255 bytes, but OCF sign-off carries the access token in
// the query (?di&uid&accesstoken) and our access tokens are JWTs of about
// 600 bytes; with go-coap's option table as it is, the reader would answer
// 4.02 Bad Option (value length out of range) before the handler runs.
const maxQueryOption = 4096

func init() {
	def := message.CoapOptionDefs[message.URIQuery]
	def.MaxLen = maxQueryOption
	message.CoapOptionDefs[message.URIQuery] = def
}

// announceOnline publishes device_online again for every signed-in session.
// The lease keeper calls it when the lease was renewed after a lapse: a
// registry may have marked this gateway's devices offline meanwhile
// (gateway_lost), though they are still connected.
func (g *Gateway) announceOnline() {
	online, _ := json.Marshal(events.OnlineContent{Gateway: g.cfg.ID})
	g.mu.Lock()
	sessions := make([]*session, 0, len(g.sessions))
	for _, s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()
	n := 0
	for _, s := range sessions {
		if signedIn, di, uid := s.identity(); signedIn {
			s.enqueue(uid, di, events.DeviceOnline, func(e *events.Envelope) {
				e.ContentType, e.Content = events.ContentTypeJSON, online
			})
			n++
		}
	}
	g.log.Info("announced signed-in devices online again after the lease lapsed", "devices", n)
}

// offline fills a device_offline event with this gateway's id, so the
// registry ignores it when the device is meanwhile online through another
// gateway (a fast reconnect can overtake the old connection's goodbye).
func (g *Gateway) offline(reason string) func(*events.Envelope) {
	content, _ := json.Marshal(events.OfflineContent{Gateway: g.cfg.ID, Reason: reason})
	return func(e *events.Envelope) { e.ContentType, e.Content = events.ContentTypeJSON, content }
}
