package gatewaybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// Options size the benchmark. Zero values take the defaults; a negative
// count skips that part.
type Options struct {
	// Onboardings is the number of full onboardings timed (sign-up, sign-in,
	// publish over coap+tcp, then disconnect). Default 5000.
	Onboardings int
	// IdleDevices are held signed in for the memory measurement, in a
	// gateway process and in a bare go-coap server process. Default 5000.
	IdleDevices int
	// Handshakes is the number of mutual TLS handshakes timed, bare and
	// with sign-in through the gateway. Default 2000.
	Handshakes int
	// Reconnects is the size of the reconnect storm: devices that were
	// onboarded before come back at once and only sign in (coap+tcp), and
	// stay connected. Default 5000.
	Reconnects int
	// Concurrency is the number of devices working at once. Default 64.
	Concurrency int
	// SourceIPs are the local addresses devices dial from, so runs are not
	// limited by one address's ephemeral ports. Default 127.0.0.1-127.0.0.254.
	SourceIPs string
	// InProcessBackend runs NATS and the token endpoint in this process
	// (tests); by default they run in a child process so that their CPU is
	// not counted as the gateway's.
	InProcessBackend bool
	// Spawn starts a server process for the memory measurement (role
	// "gateway" or "bare" with args); default re-runs this executable as
	// `bench gateway --role <role> <args>`.
	Spawn func(role string, args []string) (*Process, error)
}

func (o *Options) setDefaults() error {
	if o.Onboardings == 0 {
		o.Onboardings = 5000
	}
	if o.IdleDevices == 0 {
		o.IdleDevices = 5000
	}
	if o.Handshakes == 0 {
		o.Handshakes = 2000
	}
	if o.Reconnects == 0 {
		o.Reconnects = 5000
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.SourceIPs == "" {
		o.SourceIPs = "127.0.0.1-127.0.0.254"
	}
	if o.Spawn == nil {
		o.Spawn = spawnSelf
	}
	return nil
}

// Run measures the gateway and writes a table to w.
func Run(ctx context.Context, o Options, w io.Writer) error {
	if err := o.setDefaults(); err != nil {
		return err
	}
	ips, err := devicesim.ParseSourceIPs(o.SourceIPs)
	if err != nil {
		return err
	}
	spawn := o.Spawn
	if o.InProcessBackend {
		spawn = nil
	}
	be, err := startBackend(ctx, spawn)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer be.close()
	fmt.Fprintf(w, "ocfcloud gateway benchmark: %s, GOMAXPROCS %d, %d parallel devices, %d source addresses\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), o.Concurrency, len(ips))
	var errs []error
	if o.Onboardings > 0 {
		errs = append(errs, benchOnboarding(ctx, o, be, ips, w))
	}
	if o.Reconnects > 0 {
		errs = append(errs, benchReconnect(ctx, o, be, ips, w))
	}
	if o.IdleDevices > 0 {
		errs = append(errs, benchMemory(ctx, o, be, ips, w))
	}
	if o.Handshakes > 0 {
		errs = append(errs, benchTLS(ctx, o, be, ips, w))
	}
	return errors.Join(errs...)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newGateway starts a gateway on be with limits fit for load tests.
func newGateway(ctx context.Context, be *backend, addr, tlsAddr string, tlsCfg any) (*coapgateway.Gateway, *nats.Conn, error) {
	nc, err := nats.Connect(be.natsURL())
	if err != nil {
		return nil, nil, err
	}
	cfg := coapgateway.Config{
		Addr:     addr,
		NATS:     nc,
		TokenURL: be.tokenURL(),
		Verifier: auth.NewVerifier(ctx, be.issuer, be.jwksURL(), nil),
		Logger:   discard(),
		Limits:   coapgateway.Limits{ConnRatePerIP: -1, MaxConnections: 1 << 20},
	}
	if tc, ok := tlsCfg.(*tlsConfig); ok && tc != nil {
		cfg.TLSAddr, cfg.TLS = tlsAddr, tc.server
	}
	g, err := coapgateway.New(ctx, cfg)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return g, nc, nil
}

// parallel runs job(i) for i in [0,n) on c workers and returns the elapsed
// time and the number of failures (with the first error).
func parallel(ctx context.Context, n, c int, progress io.Writer, what string, job func(i int) error) (time.Duration, int64, error) {
	var next, failed, done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	stop := make(chan struct{})
	if progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					fmt.Fprintf(progress, "  %s: %d/%d\r", what, done.Load(), n)
				}
			}
		}()
	}
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := job(i); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	if progress != nil {
		fmt.Fprintf(progress, "%*s\r", 60, "")
	}
	return elapsed, failed.Load(), firstErr
}

// benchOnboarding runs full onboardings against a gateway in a child
// process (in this process when the benchmark cannot spawn one), with
// devices that speak CoAP on the raw socket (rawdevice.go), so the
// gateway's CPU per onboarding is measured apart from the devices'.
func benchOnboarding(ctx context.Context, o Options, be *backend, ips []netip.Addr, w io.Writer) error {
	addr, gwCPU, stop, err := onboardingGateway(ctx, o, be)
	if err != nil {
		return err
	}
	defer stop()
	var st stepTimes
	gw0, cpu0 := gwCPU(), cpuTime()
	elapsed, failed, firstErr := parallel(ctx, o.Onboardings, o.Concurrency, w, "onboarding", func(i int) error {
		dev, err := dialRaw(ctx, addr, ips[i%len(ips)], nil)
		if err != nil {
			return err
		}
		defer dev.conn.Close()
		return dev.onboard(devicesim.NewDeviceID(), &st)
	})
	gw, devices := gwCPU()-gw0, cpuTime()-cpu0
	ok := int64(o.Onboardings) - failed
	avg := func(sum *atomic.Int64) time.Duration {
		return (time.Duration(sum.Load()) / time.Duration(max(ok, 1))).Round(10 * time.Microsecond)
	}
	cpu := cpuLine(devices, ok) // gateway in this process: both together
	if gw > 0 {
		cpu = strings.Replace(cpuLine(gw, ok), "; CPU", "; gateway CPU", 1) +
			fmt.Sprintf(", devices %v each", (devices/time.Duration(max(ok, 1))).Round(time.Microsecond))
	}
	fmt.Fprintf(w, "full onboardings (sign-up + sign-in + publish, coap+tcp):  %6.0f /s   (%d in %v, %d failed; mean sign-up %v, sign-in %v, publish %v%s)\n",
		float64(ok)/elapsed.Seconds(), ok, elapsed.Round(time.Millisecond), failed, avg(&st.signUp), avg(&st.signIn), avg(&st.publish), cpu)
	if failed > 0 {
		return fmt.Errorf("onboarding: %d failed, first: %w", failed, firstErr)
	}
	return nil
}

// onboardingGateway starts the gateway of the onboarding measurement: a
// "gateway" child process, whose CPU gwCPU reports, or, when no child can
// be spawned, a gateway in this process (gwCPU then reports 0).
func onboardingGateway(ctx context.Context, o Options, be *backend) (addr string, gwCPU func() time.Duration, stop func(), err error) {
	if o.Spawn != nil && !o.InProcessBackend {
		if p, err := o.Spawn("gateway", be.gatewayArgs()); err == nil {
			return p.Addr, func() time.Duration { return cpuOf([]*Process{p}) }, p.Stop, nil
		}
	}
	g, nc, err := newGateway(ctx, be, "127.0.0.1:0", "", nil)
	if err != nil {
		return "", nil, nil, err
	}
	return g.Addrs()[0].String(), func() time.Duration { return 0 }, func() { g.Close(); nc.Close() }, nil
}

// holdDevices connects n devices to addr and runs prepare on each; the
// connections stay open until release is called.
func holdDevices(ctx context.Context, o Options, addr string, ips []netip.Addr, n int, w io.Writer, prepare func(cc *client.Conn) error) (release func(), failed int64, err error) {
	conns := make([]*client.Conn, n)
	_, failed, err = parallel(ctx, n, o.Concurrency, w, "connecting", func(i int) error {
		cc, err := dialDevice(ctx, addr, ips[i%len(ips)], nil)
		if err != nil {
			return err
		}
		conns[i] = cc
		return prepare(cc)
	})
	return func() {
		for _, cc := range conns {
			if cc != nil {
				_ = cc.Close()
			}
		}
	}, failed, err
}

func benchMemory(ctx context.Context, o Options, be *backend, ips []netip.Addr, w io.Writer) error {
	// per returns the growth per device of RSS, heap, stacks and goroutines
	// after two GCs, and of RSS right after connecting.
	measure := func(role string, args []string, prepare func(cc *client.Conn) error) (per [5]float64, err error) {
		p, err := o.Spawn(role, args)
		if err != nil {
			return per, fmt.Errorf("%s process: %w", role, err)
		}
		defer p.Stop()
		base, err := p.RSSAfterGC()
		if err != nil {
			return per, err
		}
		release, failed, err := holdDevices(ctx, o, p.Addr, ips, o.IdleDevices, w, prepare)
		defer release()
		if failed > 0 {
			return per, fmt.Errorf("%s: %d of %d devices failed: %w", role, failed, o.IdleDevices, err)
		}
		// Let the gateway finish what sign-in started (link reads, events).
		time.Sleep(2 * time.Second)
		rightAfter, err := p.RSS()
		if err != nil {
			return per, err
		}
		after, err := p.RSSAfterGC()
		if err != nil {
			return per, err
		}
		if dir := os.Getenv("GATEWAYBENCH_HEAP"); dir != "" {
			_ = p.WriteHeapProfile(filepath.Join(dir, role+".heap"))
		}
		n := float64(o.IdleDevices)
		return [5]float64{float64(after.RSS-base.RSS) / n, float64(after.Heap-base.Heap) / n, float64(after.Stack-base.Stack) / n,
			float64(after.Goroutines-base.Goroutines) / n, float64(rightAfter-base.RSS) / n}, nil
	}
	gw, err := measure("gateway", be.gatewayArgs(),
		func(cc *client.Conn) error { return onboard(ctx, cc, devicesim.NewDeviceID()) })
	if err != nil {
		return err
	}
	// The floor gets the same three requests, with bodies of the same size
	// (a sign-in carries a JWT), so both read the same bytes.
	fakeToken := strings.Repeat("x", 600)
	bare, err := measure("bare", nil, func(cc *client.Conn) error {
		di := devicesim.NewDeviceID()
		for _, r := range []struct {
			path string
			body any
		}{
			{ocf.PathAccount, signUpRequest(di)},
			{ocf.PathSession, ocf.SessionRequest{DeviceID: di, UserID: benchUser, AccessToken: fakeToken, Login: true}},
			{ocf.PathRD, publishRequest(di)},
		} {
			if err := post(ctx, cc, r.path, r.body, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "memory per signed-in idle device (%d devices, after 2 GCs):\n", o.IdleDevices)
	for _, r := range []struct {
		name string
		v    [5]float64
	}{{"gateway", gw}, {"bare go-coap server (floor)", bare}} {
		fmt.Fprintf(w, "  %-28s RSS %5.1f KB  (Go heap %4.1f KB, stacks %4.1f KB, %.1f goroutines); right after connecting %5.1f KB\n",
			r.name, r.v[0]/1024, r.v[1]/1024, r.v[2]/1024, r.v[3], r.v[4]/1024)
	}
	return nil
}

// cpuTime is the CPU time (user + system) this process has used. Rates on a
// shared machine swing with other load; CPU per operation does not, and
// cores / (CPU per operation) is the rate an idle machine would reach.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuLine(cpu time.Duration, n int64) string {
	if n <= 0 || cpu <= 0 {
		return ""
	}
	per := cpu / time.Duration(n)
	return fmt.Sprintf("; CPU %v each, %.0f /s on %d idle cores", per.Round(time.Microsecond), float64(runtime.NumCPU())/per.Seconds(), runtime.NumCPU())
}

// benchReconnect is a reconnect storm: every device dials and signs in with
// the token it already has (the gateway verifies the JWT, subscribes to its
// commands, publishes device_online and asks the registry for its links),
// and stays connected.
func benchReconnect(ctx context.Context, o Options, be *backend, ips []netip.Addr, w io.Writer) error {
	g, nc, err := newGateway(ctx, be, "127.0.0.1:0", "", nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	defer g.Close()
	addr := g.Addrs()[0].String()
	type dev struct{ di, token string }
	devs := make([]dev, o.Reconnects)
	for i := range devs {
		di := devicesim.NewDeviceID()
		tok, err := be.mint(di)
		if err != nil {
			return err
		}
		devs[i] = dev{di, tok}
	}
	conns := make([]*client.Conn, o.Reconnects)
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				_ = cc.Close()
			}
		}
	}()
	cpu0 := cpuTime()
	elapsed, failed, firstErr := parallel(ctx, o.Reconnects, o.Concurrency, w, "reconnect storm", func(i int) error {
		cc, err := dialDevice(ctx, addr, ips[i%len(ips)], nil)
		if err != nil {
			return err
		}
		conns[i] = cc
		return signIn(ctx, cc, devs[i].di, benchUser, devs[i].token)
	})
	cpu := cpuTime() - cpu0
	ok := int64(o.Reconnects) - failed
	rate := float64(ok) / elapsed.Seconds()
	fmt.Fprintf(w, "reconnect storm (dial + sign-in, stay connected, coap+tcp): %6.0f /s   (%d in %v, %d failed%s)\n",
		rate, ok, elapsed.Round(time.Millisecond), failed, cpuLine(cpu, ok))
	if failed > 0 {
		return fmt.Errorf("reconnect storm: %d failed, first: %w", failed, firstErr)
	}
	return nil
}
