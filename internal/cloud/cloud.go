package cloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/authz"
	c2capi "github.com/ocfcloud/ocfcloud/c2c-api"
	"github.com/ocfcloud/ocfcloud/certs"
	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	registry "github.com/ocfcloud/ocfcloud/device-registry"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/portal"
)

// Service names for Config.Services.
const (
	ServiceAuthz       = "authz"
	ServiceRegistry    = "device-registry"
	ServiceC2C         = "c2c-api"
	ServiceCoAPGateway = "coap-gateway"
)

// AllServices is the default: everything in one process.
var AllServices = []string{ServiceAuthz, ServiceRegistry, ServiceC2C, ServiceCoAPGateway}

// Config configures a cloud process.
type Config struct {
	DataDir   string // default ./data
	HTTPAddr  string // default 127.0.0.1:8080
	CoAPAddr  string // default :5683; "-" disables
	CoAPSAddr string // default :5684; "-" disables
	// MinFreeDisk is the free space the data dir needs before the embedded
	// nats-server restarts JetStream after a write error (a full disk);
	// default platform.DefaultMinFreeDisk.
	MinFreeDisk uint64
	// PublicURL is the issuer and the base of URLs handed to clients;
	// default http://<HTTPAddr as bound>.
	PublicURL string
	// PublicHost is the host devices dial (cis); default the CoAP listen host,
	// or 127.0.0.1 when that is a wildcard.
	PublicHost string
	// AuthzURL is where gateways and resource servers reach authz when it
	// runs elsewhere; default this process.
	AuthzURL      string
	NATSURL       string // external NATS; empty starts an embedded one
	MongoURI      string // external MongoDB; empty starts an embedded FerretDB
	Database      string // default "ocfcloud"
	AdminPassword string
	Services      []string // default AllServices
	// CloudID is the cloud's sid; default generated once and kept in
	// <data-dir>/certs. Every process of one cloud must use the same.
	CloudID string
	// CACertFile is the PEM CA bundle handed to devices in onboarding codes
	// (cloudCA); default the dev CA.
	CACertFile string
	// HTTPTLSCertFile and HTTPTLSKeyFile make the HTTP listener serve HTTPS
	// with this certificate (re-read when the files change). HTTPTLS serves
	// HTTPS with a certificate from the dev CA instead.
	HTTPTLSCertFile string
	HTTPTLSKeyFile  string
	HTTPTLS         bool
	// AdvertiseCIS and AdvertiseCISSecure override the device endpoints put
	// into onboarding codes (e.g. a load balancer in front of the gateways).
	AdvertiseCIS       string
	AdvertiseCISSecure string
	// StreamReplicas is the replica count of the event stream and the KV
	// buckets (3 on a NATS cluster); default 1.
	StreamReplicas int
	// LeaseTTL is the gateway liveness lease: devices of a gateway that
	// stopped renewing it go offline after about this long. Default 15 s.
	LeaseTTL time.Duration
	// HTTPReadHeaderTimeout cuts off clients that do not finish their
	// request headers (slowloris); default 10 s.
	HTTPReadHeaderTimeout time.Duration
	// RegistryOverNATS makes an in-process c2c-api query the registry over
	// NATS as a separate process would (benchmarks, tests of that path).
	RegistryOverNATS bool
	// CORSOrigins may call the HTTP API from a browser ("*" for any).
	CORSOrigins []string
	// GatewayLimits bound the CoAP gateway (connections, message size,
	// per-IP connection rate, requests in flight per device, inactivity);
	// zero values take the gateway's defaults.
	GatewayLimits coapgateway.Limits
	// DeviceCAFile is a PEM file of CA certificates that device identity
	// certificates must chain to on coaps+tcp; default the dev CA.
	DeviceCAFile string
	// CoAPTLSCertFile and CoAPTLSKeyFile are the gateway's certificate for
	// coaps+tcp (CN uuid:<cloud id>, re-read when the files change);
	// default one from the dev CA.
	CoAPTLSCertFile string
	CoAPTLSKeyFile  string
	// Webhooks configures event subscriptions and webhook delivery. Without
	// a SecretsKey, the key is read from (or created in) <DataDir>/secrets.key.
	Webhooks c2capi.WebhookConfig
	Logger   *slog.Logger
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	for _, s := range c.Services {
		if !slices.Contains(AllServices, s) {
			errs = append(errs, fmt.Errorf("unknown service %q (known: %s)", s, strings.Join(AllServices, ", ")))
		}
	}
	for name, addr := range map[string]string{"http-addr": c.HTTPAddr, "coap-addr": c.CoAPAddr, "coaps-addr": c.CoAPSAddr} {
		if addr == "" || addr == "-" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", name, addr, err))
		}
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, fmt.Errorf("public URL %q must start with http:// or https://", c.PublicURL))
	}
	if (c.CoAPTLSCertFile == "") != (c.CoAPTLSKeyFile == "") {
		errs = append(errs, errors.New("--coap-tls-cert and --coap-tls-key go together"))
	}
	if c.CoAPTLSCertFile != "" && c.DeviceCAFile == "" {
		errs = append(errs, errors.New("--coap-tls-cert needs --device-ca (the CAs device certificates chain to)"))
	}
	if (c.HTTPTLSCertFile == "") != (c.HTTPTLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.HTTPTLS && c.HTTPTLSCertFile != "" {
		errs = append(errs, errors.New("--http-tls uses a dev certificate; it cannot be combined with --tls-cert"))
	}
	for name, v := range map[string]string{"cis": c.AdvertiseCIS, "cis-secure": c.AdvertiseCISSecure} {
		if v != "" && !strings.HasPrefix(v, "coap+tcp://") && !strings.HasPrefix(v, "coaps+tcp://") {
			errs = append(errs, fmt.Errorf("--%s %q must be a coap+tcp:// or coaps+tcp:// URL", name, v))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.CoAPAddr == "" {
		c.CoAPAddr = ":5683"
	}
	if c.CoAPSAddr == "" {
		c.CoAPSAddr = ":5684"
	}
	if c.Database == "" {
		c.Database = "ocfcloud"
	}
	if c.HTTPReadHeaderTimeout <= 0 {
		c.HTTPReadHeaderTimeout = 10 * time.Second
	}
	if len(c.Services) == 0 {
		c.Services = AllServices
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Cloud is a running ocfcloud process.
type Cloud struct {
	cfg       Config
	log       *slog.Logger
	ferret    *platform.Ferret // the embedded database, when there is one
	closers   []func()
	httpSrv   *http.Server
	httpLn    net.Listener
	publicURL string

	Certs    *certs.Bundle
	authz    *authz.Server
	registry *registry.Registry
	c2c      *c2capi.API
	gateway  *coapgateway.Gateway
	nc       *nats.Conn
	natsURL  string
	// embeddedNATS is the nats-server this process runs, nil with --nats-url.
	embeddedNATS *platform.NATS
	// dbUp is the database's state as the last ping saw it.
	dbUp atomic.Bool
	// httpClient calls our own services; it trusts the cloud's CAs.
	httpClient *http.Client
	mongo      *mongo.Client
}

// New starts every configured service. On error everything started so far is
// stopped again.
func New(ctx context.Context, cfg Config) (_ *Cloud, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cloud{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	started := time.Now()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := checkWritable(cfg.DataDir); err != nil {
		return nil, err
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h := cfg.PublicHost; h != "" && !slices.Contains(hosts, h) {
		hosts = append(hosts, h)
	}
	if c.Certs, err = certs.EnsureDev(certs.Options{Dir: filepath.Join(cfg.DataDir, "certs"), Hosts: hosts, CloudID: cfg.CloudID}); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	cloudCA := c.Certs.CAPEM
	trust, err := x509.SystemCertPool()
	if err != nil || trust == nil {
		trust = x509.NewCertPool()
	}
	trust.AppendCertsFromPEM(c.Certs.CAPEM)
	if cfg.CACertFile != "" {
		if _, err := certs.ReadCertificatesFile(cfg.CACertFile); err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		if cloudCA, err = os.ReadFile(cfg.CACertFile); err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		trust.AppendCertsFromPEM(cloudCA)
	}
	// Calls between our own services (JWKS, token exchange) trust the cloud's
	// CAs as well as the system's, so HTTPS with a private CA works.
	c.httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// Every device sign-up and refresh is a call to authz: keep
		// connections open under load.
		TLSClientConfig: &tls.Config{RootCAs: trust, MinVersion: tls.VersionTLS12}, MaxIdleConns: 256, MaxIdleConnsPerHost: 256,
	}}

	natsURL := cfg.NATSURL
	if natsURL == "" {
		n, err := platform.StartNATS(platform.NATSOptions{StoreDir: filepath.Join(cfg.DataDir, "nats"), Logger: cfg.Logger, MinFreeDisk: cfg.MinFreeDisk})
		if err != nil {
			return nil, err
		}
		c.embeddedNATS = n
		c.closers = append(c.closers, n.Shutdown)
		natsURL = n.URL()
	}
	c.natsURL = natsURL
	if c.nc, err = nats.Connect(natsURL, nats.Name("ocfcloud"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(false)); err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", natsURL, err)
	}
	c.closers = append(c.closers, func() { _ = c.nc.Drain() })

	mongoURI := cfg.MongoURI
	if mongoURI == "" {
		f, err := platform.StartFerret(filepath.Join(cfg.DataDir, "db"), cfg.Logger)
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, f.Shutdown)
		mongoURI = f.URI()
		c.ferret = f
	}
	if c.mongo, err = platform.ConnectMongo(ctx, mongoURI); err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { _ = c.mongo.Disconnect(context.Background()) })
	c.closers = append(c.closers, c.watchDatabase())
	db := c.mongo.Database(cfg.Database)

	if c.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	var httpTLS *tls.Config
	switch {
	case cfg.HTTPTLSCertFile != "":
		if httpTLS, _, err = certs.ServerTLSFromFiles(certs.FileTLSOptions{CertFile: cfg.HTTPTLSCertFile, KeyFile: cfg.HTTPTLSKeyFile}); err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
	case cfg.HTTPTLS:
		httpTLS = c.Certs.ServerTLSConfig(tls.NoClientCert)
	}
	scheme := "http://"
	if httpTLS != nil {
		scheme = "https://"
	}
	localURL := scheme + c.httpLn.Addr().String()
	c.publicURL = strings.TrimRight(cfg.PublicURL, "/")
	if c.publicURL == "" {
		c.publicURL = localURL
	}
	authzURL := strings.TrimRight(cfg.AuthzURL, "/")
	if authzURL == "" {
		authzURL = localURL
	}
	verifier := auth.NewVerifier(oidc.ClientContext(context.Background(), c.httpClient), c.publicURL, authzURL+"/.well-known/jwks.json", nil, auth.WithRevocations(c.nc, db))

	mux := http.NewServeMux()
	coapPort, coapsPort := portOf(cfg.CoAPAddr), portOf(cfg.CoAPSAddr)
	// The gateway starts first so that the addresses handed to devices are
	// the bound ones; it reaches authz over HTTP only when a device signs up.
	if c.has(ServiceCoAPGateway) {
		gcfg := coapgateway.Config{
			NATS:     c.nc,
			TokenURL: authzURL + "/oauth/token",
			Verifier: verifier,
			Logger:   cfg.Logger,
			Limits:   cfg.GatewayLimits,
			// Trusts the cloud's CAs, for an authz behind HTTPS.
			HTTPClient: c.httpClient,
			LeaseTTL:   cfg.LeaseTTL,
		}
		if cfg.CoAPAddr != "-" {
			gcfg.Addr = cfg.CoAPAddr
		}
		if cfg.CoAPSAddr != "-" {
			gcfg.TLSAddr = cfg.CoAPSAddr
			// OCF mutual TLS: the device certificate must chain to the
			// device CA; the gateway checks its uuid:<di> against sign-in.
			if cfg.CoAPTLSCertFile != "" {
				deviceCA := cfg.DeviceCAFile
				if gcfg.TLS, _, err = certs.ServerTLSFromFiles(certs.FileTLSOptions{
					CertFile: cfg.CoAPTLSCertFile, KeyFile: cfg.CoAPTLSKeyFile, ClientCAFile: deviceCA,
					ClientAuth: tls.RequireAndVerifyClientCert, CloudID: c.Certs.CloudID,
				}); err != nil {
					return nil, fmt.Errorf("--coap-tls-cert: %w", err)
				}
			} else {
				gcfg.TLS = c.Certs.ServerTLSConfig(tls.RequireAndVerifyClientCert)
				if cfg.DeviceCAFile != "" {
					if gcfg.TLS.ClientCAs, err = coapgateway.LoadCertPool(cfg.DeviceCAFile); err != nil {
						return nil, err
					}
				}
			}
		}
		if c.gateway, err = coapgateway.New(ctx, gcfg); err != nil {
			return nil, err
		}
		c.closers = append(c.closers, c.gateway.Close)
		// Listeners on port 0 (tests) are only known now.
		for i, a := range c.gateway.Addrs() {
			if i == 0 && gcfg.Addr != "" {
				coapPort = portOf(a.String())
			} else {
				coapsPort = portOf(a.String())
			}
		}
	}
	publicHost := cfg.PublicHost
	if publicHost == "" {
		publicHost = hostOf(cfg.CoAPAddr)
	}
	if c.has(ServiceAuthz) {
		c.authz, err = authz.New(ctx, authz.Config{
			DatabaseUp:    c.dbUp.Load,
			Issuer:        c.publicURL,
			JWKSURL:       authzURL + "/.well-known/jwks.json",
			AdminPassword: cfg.AdminPassword,
			Logger:        cfg.Logger,
			NATS:          c.nc,
			Verifier:      verifier,
			Onboarding: authz.OnboardingInfo{
				APN:        "ocfcloud",
				CIS:        orDefault(cfg.AdvertiseCIS, endpoint("coap+tcp", publicHost, coapPort)),
				CISSecure:  orDefault(cfg.AdvertiseCISSecure, endpoint("coaps+tcp", publicHost, coapsPort)),
				CloudID:    c.Certs.CloudID,
				CloudCAPEM: string(cloudCA),
			},
		}, db)
		if err != nil {
			return nil, fmt.Errorf("authz: %w", err)
		}
		c.authz.Register(mux)
	}
	if c.has(ServiceRegistry) {
		if c.registry, err = registry.New(ctx, registry.Config{NATS: c.nc, DB: db, Logger: cfg.Logger,
			Stream: events.StreamOptions{Replicas: cfg.StreamReplicas, Owner: true}, KVReplicas: cfg.StreamReplicas, LeaseTTL: cfg.LeaseTTL}); err != nil {
			return nil, err
		}
		c.closers = append(c.closers, c.registry.Close)
	}
	if c.has(ServiceC2C) {
		c2cCfg := c2capi.Config{Verifier: verifier, NATS: c.nc, Logger: cfg.Logger, DB: db, Webhooks: cfg.Webhooks}
		if c.registry != nil && !cfg.RegistryOverNATS {
			c2cCfg.Registry = c.registry // same process: no network hop
		}
		if c2cCfg.Webhooks.StreamReplicas == 0 {
			c2cCfg.Webhooks.StreamReplicas = cfg.StreamReplicas
		}
		// Signing secrets are encrypted with a key kept out of the database:
		// a given file (every replica the same), else one generated once
		// into the data dir.
		switch {
		case len(c2cCfg.Webhooks.SecretsKey) > 0:
		case c2cCfg.Webhooks.SecretsKeyFile != "":
			if c2cCfg.Webhooks.SecretsKey, err = c2capi.ReadSecretsKeyFile(c2cCfg.Webhooks.SecretsKeyFile); err != nil {
				return nil, err
			}
		default:
			if c2cCfg.Webhooks.SecretsKey, err = c2capi.LoadOrCreateSecretsKey(filepath.Join(cfg.DataDir, "secrets.key")); err != nil {
				return nil, err
			}
		}
		if c.c2c, err = c2capi.New(c2cCfg); err != nil {
			return nil, fmt.Errorf("c2c-api: %w", err)
		}
		c.closers = append(c.closers, c.c2c.Close)
		c.c2c.Register(mux)
	}
	if c.has(ServiceAuthz) {
		// The portal is static; it is served where authz is, whose login it uses.
		pc := portal.Config{Issuer: c.publicURL, CAFingerprint: certs.Fingerprint(c.Certs.CACert.Raw)}
		if httpTLS != nil {
			if leaf := httpLeaf(httpTLS); leaf != nil {
				pc.HTTPSFingerprint = certs.Fingerprint(leaf)
			}
		}
		portal.Register(mux, pc)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", c.serveReady)
	c.httpSrv = &http.Server{
		Handler:           httpx.WithRequestID(cfg.Logger, httpx.WithCORS(cfg.CORSOrigins, httpx.WithGzip(mux))),
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		serve := func() error { return c.httpSrv.Serve(c.httpLn) }
		if httpTLS != nil {
			c.httpSrv.TLSConfig = httpTLS
			serve = func() error { return c.httpSrv.ServeTLS(c.httpLn, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("http server stopped", "err", err)
		}
	}()
	c.closers = append(c.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.httpSrv.Shutdown(sctx)
	})

	if c.ferret != nil {
		// The services created their collections: index them before traffic.
		if err := c.ferret.IndexIDs(ctx); err != nil {
			c.log.Warn("ferretdb _id index", "err", err)
		}
	}
	c.log.Info("ocfcloud ready", "http", localURL, "issuer", c.publicURL, "services", strings.Join(cfg.Services, ","), "took", time.Since(started).Round(time.Millisecond))
	return c, nil
}

func (c *Cloud) has(s string) bool { return slices.Contains(c.cfg.Services, s) }

// HTTPAddr is the bound HTTP address.
func (c *Cloud) HTTPAddr() string { return c.httpLn.Addr().String() }

// NATSURL is the NATS server the services use.
func (c *Cloud) NATSURL() string { return c.natsURL }

// PublicURL is the issuer and base URL.
func (c *Cloud) PublicURL() string { return c.publicURL }

// CoAPAddrs are the bound gateway addresses (coap+tcp first).
func (c *Cloud) CoAPAddrs() []net.Addr {
	if c.gateway == nil {
		return nil
	}
	return c.gateway.Addrs()
}

// GeneratedAdminPassword is the admin password generated on this start, if any.
func (c *Cloud) GeneratedAdminPassword() string {
	if c.authz == nil {
		return ""
	}
	return c.authz.GeneratedAdminPassword()
}

// Ready reports whether every configured service is ready.
func (c *Cloud) Ready() (bool, map[string]bool) {
	st := map[string]bool{"nats": c.nc != nil && c.nc.IsConnected(), "database": c.dbUp.Load()}
	if c.embeddedNATS != nil {
		// An external NATS is its operator's to watch.
		st["jetstream"] = c.embeddedNATS.StoreWritable()
	}
	if c.registry != nil {
		st[ServiceRegistry] = c.registry.Ready()
	}
	if c.c2c != nil {
		st[ServiceC2C] = c.c2c.Ready()
	}
	if c.gateway != nil {
		st[ServiceCoAPGateway] = c.gateway.Ready()
	}
	if c.authz != nil {
		st[ServiceAuthz] = true
	}
	ok := true
	for _, v := range st {
		ok = ok && v
	}
	return ok, st
}

func (c *Cloud) serveReady(w http.ResponseWriter, _ *http.Request) {
	ok, st := c.Ready()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	parts := make([]string, 0, len(st))
	for k, v := range st {
		parts = append(parts, strconv.Quote(k)+":"+strconv.FormatBool(v))
	}
	slices.Sort(parts)
	fmt.Fprintf(w, "{%s}\n", strings.Join(parts, ","))
}

// Close stops every service in reverse start order.
func (c *Cloud) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// watchDatabase pings the database every two seconds for readiness, so an
// orchestrator stops sending traffic during an outage and resumes after it.
// It returns the function that stops it.
func (c *Cloud) watchDatabase() func() {
	c.dbUp.Store(true) // connected and pinged just now
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				err := c.mongo.Ping(ctx, nil)
				cancel()
				if up := err == nil; up != c.dbUp.Swap(up) {
					c.log.Warn("database reachability changed", "up", up)
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

// httpLeaf returns the DER of the certificate an HTTPS config serves now.
func httpLeaf(cfg *tls.Config) []byte {
	if cfg.GetCertificate != nil {
		if c, err := cfg.GetCertificate(&tls.ClientHelloInfo{}); err == nil && c != nil && len(c.Certificate) > 0 {
			return c.Certificate[0]
		}
	}
	if len(cfg.Certificates) > 0 && len(cfg.Certificates[0].Certificate) > 0 {
		return cfg.Certificates[0].Certificate[0]
	}
	return nil
}

// endpoint is scheme://host:port, or "" for a disabled listener (no port).
func endpoint(scheme, host, port string) string {
	if port == "" {
		return ""
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return p
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" || h == "0.0.0.0" || h == "::" {
		return "127.0.0.1"
	}
	return h
}

// Scratch starts every service in a new temporary directory on random
// loopback ports (coap+tcp only), for benchmarks and soak runs; Close also
// removes the directory.
func Scratch(ctx context.Context, adminPassword string, log *slog.Logger) (*Cloud, error) {
	dir, err := os.MkdirTemp("", "ocfcloud-scratch-")
	if err != nil {
		return nil, err
	}
	c, err := New(ctx, Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-", AdminPassword: adminPassword, Logger: log})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	c.closers = append([]func(){func() { _ = os.RemoveAll(dir) }}, c.closers...)
	return c, nil
}
