package devicesim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/ids"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// ErrUnauthorized is returned by Run when the cloud rejects the onboarding
// code (sign-up 4.01) or the refresh token; the device cannot recover without
// a new code, as with a real device.
var ErrUnauthorized = errors.New("cloud rejected the device credentials")

// Timings that mirror iotivity-lite.
const (
	signUpRetryInterval = 2 * time.Second  // sign-up answer timeout and retry period
	requestTimeout      = 10 * time.Second // sign-in, refresh, publish
	minBackoff          = 500 * time.Millisecond
	maxBackoff          = 30 * time.Second
)

const (
	defaultName         = "ocfcloud-sim"
	defaultPingInterval = 20 * time.Second
	missedPongsToDrop   = 2
	publishTTL          = 0 // 0: links live until unpublished, as iotivity-lite publishes
)

// Config describes the device and the cloud it connects to; the fields are
// the device's CoAPCloudConf resource (apn, cis, sid, at) plus simulator knobs.
type Config struct {
	// CIS is "coap+tcp://host:port" or "coaps+tcp://host:port"; a
	// comma-separated list names several gateways, tried in turn whenever
	// the device (re)connects.
	CIS          string
	APN          string        // auth provider name, sent as authprovider
	SID          string        // cloud id (informational; logged)
	AccessToken  string        // the onboarding code ("at")
	DeviceID     string        // di; if empty a random UUID v4
	Name         string        // device name, default "ocfcloud-sim"
	TLS          *tls.Config   // used for coaps+tcp
	PingInterval time.Duration // default 20s
	// Dialer dials the cloud; set LocalAddr to pick the source address
	// (fleets spread devices over 127.0.0.x). Default: 3 s timeout.
	Dialer *net.Dialer
	// ChangeEvery toggles /light/1 and bumps its power on this schedule
	// while the device is online, so observers see notifications. 0: never.
	ChangeEvery time.Duration
	Logger      *slog.Logger
	// Acknowledged, when set, is called for every representation of
	// /light/1 the cloud has provably read (see Ack), from the goroutine
	// that keeps the connection alive.
	Acknowledged func(Ack)
}

// Device is a simulated OCF device. Its methods are safe for concurrent use.
type Device struct {
	cfg     Config
	addrs   []string
	dials   int // dial attempts; picks the next address
	useTLS  bool
	piid    string
	pi      string
	log     *slog.Logger
	ready   chan struct{}
	readyMu sync.Once

	credMu sync.Mutex
	cred   credentials

	lightMu sync.Mutex
	light   lightState

	// obsMu serialises observe registrations and notifications so that
	// sequence numbers reach every observer in increasing order.
	obsMu     sync.Mutex
	obsSeq    uint32
	observers map[observerKey]observer
	unacked   map[mux.Conn][]Ack // written since the last pong, when Acknowledged is set
}

type credentials struct {
	signedUp     bool
	uid          string
	accessToken  string
	refreshToken string
	expiresAt    time.Time // zero: never expires
	refreshAt    time.Time // when to refresh on a live connection; zero: never
}

// New validates cfg and returns a device that has not connected yet.
func New(cfg Config) (*Device, error) {
	var errs []error
	var addrs []string
	useTLS := false
	if cfg.CIS == "" {
		errs = append(errs, errors.New("cis is required"))
	}
	for i, one := range strings.Split(cfg.CIS, ",") {
		if cfg.CIS == "" {
			break
		}
		u, err := url.Parse(strings.TrimSpace(one))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("cis: %w", err))
		case u.Scheme != "coap+tcp" && u.Scheme != "coaps+tcp":
			errs = append(errs, fmt.Errorf("cis %q: scheme must be coap+tcp or coaps+tcp", one))
		case u.Host == "" || u.Port() == "":
			errs = append(errs, fmt.Errorf("cis %q: host and port are required", one))
		case i > 0 && (u.Scheme == "coaps+tcp") != useTLS:
			errs = append(errs, fmt.Errorf("cis %q: every address must use the same scheme", one))
		default:
			addrs = append(addrs, u.Host)
			useTLS = u.Scheme == "coaps+tcp"
		}
	}
	if useTLS && cfg.TLS == nil {
		errs = append(errs, errors.New("coaps+tcp needs a TLS config"))
	}
	if cfg.AccessToken == "" {
		errs = append(errs, errors.New("access token (onboarding code) is required"))
	}
	if cfg.PingInterval < 0 {
		errs = append(errs, errors.New("ping interval must not be negative"))
	}
	if cfg.ChangeEvery < 0 {
		errs = append(errs, errors.New("change interval must not be negative"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("devicesim config: %w", errors.Join(errs...))
	}
	if cfg.DeviceID == "" {
		cfg.DeviceID = ids.New()
	}
	if cfg.Name == "" {
		cfg.Name = defaultName
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = defaultPingInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Device{
		cfg:       cfg,
		addrs:     addrs,
		useTLS:    useTLS,
		piid:      ids.New(),
		pi:        ids.New(),
		log:       cfg.Logger.With("device_id", cfg.DeviceID),
		ready:     make(chan struct{}),
		light:     lightState{Name: "Light"},
		observers: make(map[observerKey]observer),
	}, nil
}

// DeviceID returns the device id (di).
func (d *Device) DeviceID() string { return d.cfg.DeviceID }

// Ready is closed after the first successful publish.
func (d *Device) Ready() <-chan struct{} { return d.ready }

// Run connects to the cloud and keeps the device online until ctx is done.
// It signs up once (retrying with the same code while the cloud is silent or
// failing), and on every connection signs in — refreshing the token first
// when it has expired or the cloud answers 4.01 — publishes its resources and
// serves the cloud's requests. A lost connection is re-dialled with backoff.
// Run returns nil when ctx is done, and an error wrapping ErrUnauthorized when
// the cloud rejects the credentials for good.
func (d *Device) Run(ctx context.Context) error {
	d.log.Info("device starting", "cis", d.cfg.CIS, "sid", d.cfg.SID, "apn", d.cfg.APN)
	if d.cfg.ChangeEvery > 0 {
		go d.changeLoop(ctx)
	}
	backoff := minBackoff
	for {
		online, err := d.connectOnce(ctx)
		if ctx.Err() != nil {
			d.log.Info("device stopped")
			return nil
		}
		if errors.Is(err, ErrUnauthorized) {
			d.log.Error("device gives up", "error", err)
			return err
		}
		if online {
			backoff = minBackoff
		}
		wait := backoff/2 + mrand.N(backoff/2+1)
		d.log.Warn("connection lost, reconnecting", "error", err, "in", wait)
		select {
		case <-ctx.Done():
			d.log.Info("device stopped")
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// connectOnce runs one connection from dial to loss. online reports whether
// the device got as far as publishing, which resets the backoff.
func (d *Device) connectOnce(ctx context.Context) (online bool, err error) {
	addr := d.addrs[d.dials%len(d.addrs)]
	d.dials++
	conn, err := d.dial(ctx, addr)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	d.log.Info("connected", "remote", conn.RemoteAddr().String())

	if err := d.ensureSignedUp(ctx, conn); err != nil {
		return false, err
	}
	if err := d.signIn(ctx, conn); err != nil {
		return false, err
	}
	if err := d.publish(ctx, conn); err != nil {
		return false, err
	}
	d.readyMu.Do(func() { close(d.ready) })
	return true, d.keepAlive(ctx, conn)
}

func (d *Device) dial(ctx context.Context, addr string) (*client.Conn, error) {
	router := mux.NewRouter()
	router.SetErrorHandler(func(err error) { d.log.Debug("coap router", "error", err) })
	router.DefaultHandle(mux.HandlerFunc(d.serve))
	opts := []tcp.Option{
		options.WithMux(router),
		options.WithContext(ctx),
		// Real devices do not open with a CSM and ignore the cloud's.
		options.WithDisableTCPSignalMessageCSM(),
		options.WithErrors(func(err error) { d.log.Debug("coap connection", "error", err) }),
		// Several cloud requests may be in flight; our own requests are few.
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
	}
	if d.useTLS {
		opts = append(opts, options.WithTLS(d.cfg.TLS))
	}
	if d.cfg.Dialer != nil {
		opts = append(opts, options.WithDialer(d.cfg.Dialer))
	}
	conn, err := tcp.Dial(addr, opts...)
	if err != nil {
		return nil, err
	}
	conn.AddOnClose(func() { d.dropObservers(conn) })
	return conn, nil
}

// keepAlive pings every PingInterval and drops the connection after
// missedPongsToDrop pings in a row go unanswered within the interval. It also
// refreshes the access token and signs in again before the token expires.
func (d *Device) keepAlive(ctx context.Context, conn *client.Conn) error {
	ticker := time.NewTicker(d.cfg.PingInterval)
	defer ticker.Stop()
	refresh := time.NewTimer(0)
	defer refresh.Stop()
	armRefresh := func() {
		refresh.Stop()
		if at := d.refreshDeadline(); !at.IsZero() {
			refresh.Reset(time.Until(at))
		}
	}
	armRefresh()
	missed := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Done():
			return errors.New("connection closed by peer")
		case <-refresh.C:
			d.log.Info("access token about to expire, refreshing")
			if err := d.refresh(ctx, conn); err != nil {
				return err
			}
			if err := d.signIn(ctx, conn); err != nil {
				return err
			}
			armRefresh()
			continue
		case <-ticker.C:
		}
		sent := d.takeUnacked(conn)
		pctx, cancel := context.WithTimeout(ctx, d.cfg.PingInterval)
		err := conn.Ping(pctx)
		cancel()
		if err == nil {
			d.acknowledge(sent)
			missed = 0
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		missed++
		d.log.Warn("ping unanswered", "missed", missed, "error", err)
		if missed >= missedPongsToDrop {
			return fmt.Errorf("%d pongs missed", missed)
		}
	}
}

// ocfOptions are the options iotivity-lite puts on every request.
func ocfOptions() message.Options {
	return message.Options{
		{ID: message.Accept, Value: encodeUint(uint32(ocf.ContentFormatCBOR))},
		{ID: ocf.OptionAcceptVersion, Value: encodeUint(ocf.Version1)},
		{ID: ocf.OptionContentVersion, Value: encodeUint(ocf.Version1)},
	}
}

func encodeUint(v uint32) []byte {
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v) // 4 bytes always suffice
	return buf[:n]
}

// NewDeviceID returns a random device id (UUID v4), as a device generates on
// first start.
func NewDeviceID() string { return ids.New() }

// changeLoop changes the light every ChangeEvery, as a sensor or a person
// at the switch would; observers get a notification each time.
func (d *Device) changeLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.ChangeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			state, power, _ := d.Light()
			d.SetLight(!state, (power+1)%100)
		}
	}
}
