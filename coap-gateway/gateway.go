package coapgateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"
	tcpserver "github.com/plgd-dev/go-coap/v3/tcp/server"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// Config configures the gateway.
type Config struct {
	// Addr is the coap+tcp listen address ("" disables it).
	Addr string
	// TLSAddr is the coaps+tcp listen address ("" disables it); TLS must be set.
	TLSAddr string
	TLS     *tls.Config
	// NATS carries events and registry queries.
	NATS *nats.Conn
	// TokenURL is authz's token endpoint.
	TokenURL string
	// Verifier checks device access tokens at sign-in.
	Verifier *auth.Verifier
	// HTTPClient talks to authz; default has a 10 s timeout.
	HTTPClient *http.Client
	// InactivityTimeout drops a connection that sent nothing for this long
	// (devices ping every 20 s). Default 60 s.
	InactivityTimeout time.Duration
	// BackendTimeout bounds every call to authz, NATS and the registry made
	// while a device waits for an answer. Default 10 s.
	BackendTimeout time.Duration
	// DeviceTimeout bounds requests the gateway sends to a device. Default 10 s.
	DeviceTimeout time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Gateway serves device connections.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	authz    *authzClient
	pub      *events.Publisher
	registry *registryapi.Client
	seq      *events.Sequencer

	servers   []*tcpserver.Server
	listeners []net.Addr
	wg        sync.WaitGroup
	// sessionsWG counts sessions whose last events are not yet published.
	sessionsWG sync.WaitGroup

	mu       sync.Mutex
	sessions map[*client.Conn]*session

	ready atomic.Bool
}

// New starts listening on the configured addresses.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.InactivityTimeout == 0 {
		cfg.InactivityTimeout = 60 * time.Second
	}
	if cfg.BackendTimeout == 0 {
		cfg.BackendTimeout = 10 * time.Second
	}
	if cfg.DeviceTimeout == 0 {
		cfg.DeviceTimeout = 10 * time.Second
	}
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
	ocf.RegisterOptions()
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("service", "coap-gateway"),
		authz:    &authzClient{tokenURL: cfg.TokenURL, http: cfg.HTTPClient},
		pub:      events.NewPublisher(js),
		registry: registryapi.NewClient(cfg.NATS),
		seq:      events.NewSequencer(cfg.Now),
		sessions: map[*client.Conn]*session{},
	}
	if cfg.Addr != "" {
		l, err := coapnet.NewTCPListener("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("coap-gateway listen %s: %w", cfg.Addr, err)
		}
		g.serve(l, l.Addr())
	}
	if cfg.TLSAddr != "" {
		if cfg.TLS == nil {
			g.Close()
			return nil, errors.New("coap-gateway: TLSAddr needs TLS")
		}
		l, err := coapnet.NewTLSListener("tcp", cfg.TLSAddr, cfg.TLS)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("coap-gateway listen %s: %w", cfg.TLSAddr, err)
		}
		g.serve(l, l.Addr())
	}
	g.ready.Store(true)
	return g, nil
}

func (g *Gateway) serve(l tcpserver.Listener, addr net.Addr) {
	router := mux.NewRouter()
	router.DefaultHandleFunc(g.handleNotFound)
	_ = router.Handle(ocf.PathAccount, mux.HandlerFunc(g.handleAccount))
	_ = router.Handle(ocf.PathSession, mux.HandlerFunc(g.handleSession))
	_ = router.Handle(ocf.PathTokenRefresh, mux.HandlerFunc(g.handleTokenRefresh))
	_ = router.Handle(ocf.PathRD, mux.HandlerFunc(g.handleRD))
	_ = router.Handle(ocf.PathRes, mux.HandlerFunc(g.handleRes))
	srv := tcp.NewServer(
		options.WithMux(router),
		options.WithContext(context.Background()),
		options.WithOnNewConn(g.onNewConn),
		options.WithInactivityMonitor(g.cfg.InactivityTimeout, func(cc *client.Conn) {
			g.log.Info("closing inactive device connection", "remote", cc.RemoteAddr().String())
			_ = cc.Close()
		}),
		options.WithPeriodicRunner(periodicRunner(time.Second)),
		options.WithErrors(func(err error) { g.log.Debug("coap", "err", err) }),
		// Devices send no CSM (iotivity-lite does not wait for one either).
		options.WithDisablePeerTCPSignalMessageCSMs(),
		options.WithMaxMessageSize(256*1024),
		// Commands and observations to one device run in parallel; go-coap
		// defaults to one request in flight per connection.
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
	)
	g.servers = append(g.servers, srv)
	g.listeners = append(g.listeners, addr)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := srv.Serve(l); err != nil {
			g.log.Error("coap listener stopped", "addr", addr.String(), "err", err)
		}
	}()
	g.log.Info("coap listener ready", "addr", addr.String())
}

// Addrs returns the bound listener addresses, coap+tcp first.
func (g *Gateway) Addrs() []net.Addr { return g.listeners }

// Ready reports whether the gateway accepts devices.
func (g *Gateway) Ready() bool { return g.ready.Load() && g.cfg.NATS.IsConnected() }

// Close stops the listeners and closes every device connection.
func (g *Gateway) Close() {
	g.ready.Store(false)
	for _, s := range g.servers {
		s.Stop()
	}
	g.wg.Wait()
	// Let closed sessions publish their offline events before NATS goes away.
	done := make(chan struct{})
	go func() { g.sessionsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.log.Warn("closing with device events still unpublished")
	}
}

func (g *Gateway) onNewConn(cc *client.Conn) {
	g.sessionsWG.Add(1)
	s := newSession(g, cc)
	go func() { <-s.done; g.sessionsWG.Done() }()
	g.mu.Lock()
	g.sessions[cc] = s
	g.mu.Unlock()
	cc.AddOnClose(func() {
		g.mu.Lock()
		delete(g.sessions, cc)
		g.mu.Unlock()
		s.close()
	})
}

func (g *Gateway) sessionOf(w mux.ResponseWriter) *session {
	cc, ok := w.Conn().(*client.Conn)
	if !ok {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[cc]
}

func periodicRunner(every time.Duration) func(f func(now time.Time) bool) {
	return func(f func(now time.Time) bool) {
		go func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for now := range t.C {
				if !f(now) {
					return
				}
			}
		}()
	}
}
