package devicesim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FleetConfig runs many simulated devices from one process.
type FleetConfig struct {
	// Count is the number of devices, each with its own di and code.
	Count int
	// Device is the template of every device. CIS may be empty: it is then
	// taken from each onboarding answer (cisSecure when TLS is set).
	// AccessToken and DeviceID are ignored.
	Device Config
	// Codes hands out one onboarding code per device.
	Codes CodeSource
	// SourceIPs are the local addresses devices dial from, round robin, so
	// that more devices connect than one address has ephemeral ports. Empty:
	// the system's choice.
	SourceIPs []netip.Addr
	// Identities issues each device its identity certificate for
	// coaps+tcp; the template's TLS config supplies RootCAs.
	Identities *IdentityIssuer
	// StartRate is devices started per second; default 500.
	StartRate float64
	// Progress receives a status line while devices connect (nil: none).
	Progress io.Writer
}

// FleetStats counts devices by how far they got.
type FleetStats struct {
	Started int64 // Run called
	Ready   int64 // signed up, signed in and published at least once
	Failed  int64 // gave up (code rejected) or could not be created
}

func (s FleetStats) String() string {
	return fmt.Sprintf("started %d, online %d, failed %d", s.Started, s.Ready, s.Failed)
}

// Fleet is a running set of devices.
type Fleet struct {
	cfg     FleetConfig
	started atomic.Int64
	ready   atomic.Int64
	failed  atomic.Int64
	mu      sync.Mutex
	devices []*Device
	lastErr error
}

// Stats reports progress.
func (f *Fleet) Stats() FleetStats {
	return FleetStats{Started: f.started.Load(), Ready: f.ready.Load(), Failed: f.failed.Load()}
}

// Devices returns the devices created so far.
func (f *Fleet) Devices() []*Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Device(nil), f.devices...)
}

// RunFleet starts cfg.Count devices at cfg.StartRate and keeps them online
// until ctx is done. It prints a progress line to cfg.Progress while devices
// connect and returns when every device has stopped. The error reports
// devices that could not start or were refused for good.
func RunFleet(ctx context.Context, cfg FleetConfig) error {
	f, err := NewFleet(cfg)
	if err != nil {
		return err
	}
	return f.Run(ctx)
}

// NewFleet validates cfg; Run starts it. Use it to watch Stats while it runs.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	if cfg.Count <= 0 {
		return nil, errors.New("fleet: count must be positive")
	}
	if cfg.Codes == nil {
		return nil, errors.New("fleet: a code source is required (codes are single use)")
	}
	if cfg.StartRate <= 0 {
		cfg.StartRate = 500
	}
	return &Fleet{cfg: cfg}, nil
}

// Run starts the devices and blocks until ctx is done and all have stopped.
func (f *Fleet) Run(ctx context.Context) error {
	if f.cfg.StartRate <= 0 {
		f.cfg.StartRate = 500
	}
	var wg sync.WaitGroup
	progressDone := make(chan struct{})
	stopProgress := make(chan struct{})
	go func() {
		defer close(progressDone)
		f.progress(stopProgress)
	}()
	interval := time.Duration(float64(time.Second) / f.cfg.StartRate)
	next := time.Now()
	for i := 0; i < f.cfg.Count && ctx.Err() == nil; i++ {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		next = next.Add(interval)
		d, err := f.newDevice(ctx, i)
		if err != nil {
			f.fail(err)
			if errors.Is(err, ErrNoMoreCodes) {
				break
			}
			continue
		}
		f.started.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() {
				select {
				case <-d.Ready():
					f.ready.Add(1)
				case <-ctx.Done():
				}
			}()
			if err := d.Run(ctx); err != nil {
				f.fail(err)
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	close(stopProgress)
	<-progressDone
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.failed.Load(); n > 0 {
		return fmt.Errorf("fleet: %d of %d devices failed; last: %w", n, f.cfg.Count, f.lastErr)
	}
	return nil
}

func (f *Fleet) fail(err error) {
	f.failed.Add(1)
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

func (f *Fleet) newDevice(ctx context.Context, i int) (*Device, error) {
	code, err := f.cfg.Codes.Next(ctx)
	if err != nil {
		return nil, fmt.Errorf("device %d: %w", i+1, err)
	}
	cfg := f.cfg.Device
	cfg.AccessToken = code.AT
	cfg.DeviceID = NewDeviceID()
	if cfg.APN == "" {
		cfg.APN = code.APN
	}
	if cfg.SID == "" {
		cfg.SID = code.SID
	}
	if cfg.CIS == "" {
		cfg.CIS = code.CIS
		if cfg.TLS != nil || f.cfg.Identities != nil {
			cfg.CIS = code.CISSecure
		}
	}
	if strings.HasPrefix(cfg.CIS, "coaps+tcp://") {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.TLS != nil {
			t = cfg.TLS.Clone()
		}
		if f.cfg.Identities != nil {
			cert, err := f.cfg.Identities.Issue(cfg.DeviceID)
			if err != nil {
				return nil, err
			}
			t.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = t
	}
	if n := len(f.cfg.SourceIPs); n > 0 {
		base := net.Dialer{Timeout: 3 * time.Second}
		if cfg.Dialer != nil {
			base = *cfg.Dialer
		}
		base.LocalAddr = &net.TCPAddr{IP: f.cfg.SourceIPs[i%n].AsSlice()}
		cfg.Dialer = &base
	}
	d, err := New(cfg)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.devices = append(f.devices, d)
	f.mu.Unlock()
	return d, nil
}

// progress rewrites one status line every second while devices connect, and
// ends it once all are online (or on stop).
func (f *Fleet) progress(stop <-chan struct{}) {
	w := f.cfg.Progress
	if w == nil {
		<-stop
		return
	}
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	print := func(final bool) {
		s := f.Stats()
		end := "\r"
		if final {
			end = "\n"
		}
		fmt.Fprintf(w, "devices: %d/%d started, %d online, %d failed, %s%s", s.Started, f.cfg.Count, s.Ready, s.Failed, time.Since(start).Round(time.Second), end)
	}
	for {
		select {
		case <-stop:
			print(true)
			return
		case <-t.C:
			s := f.Stats()
			if s.Ready+s.Failed >= int64(f.cfg.Count) {
				print(true)
				<-stop
				return
			}
			print(false)
		}
	}
}

// ParseSourceIPs parses "127.0.0.1-127.0.0.254", a comma-separated list of
// addresses and ranges, or a CIDR prefix ("127.0.1.0/24", network and
// broadcast addresses excluded).
func ParseSourceIPs(spec string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
		case strings.Contains(part, "/"):
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return nil, fmt.Errorf("source IPs %q: %w", part, err)
			}
			p = p.Masked()
			for a := p.Addr().Next(); p.Contains(a) && p.Contains(a.Next()); a = a.Next() {
				out = append(out, a)
			}
		case strings.Contains(part, "-"):
			lo, hi, _ := strings.Cut(part, "-")
			from, err1 := netip.ParseAddr(strings.TrimSpace(lo))
			to, err2 := netip.ParseAddr(strings.TrimSpace(hi))
			if err := errors.Join(err1, err2); err != nil || to.Less(from) {
				return nil, fmt.Errorf("source IPs %q: want first-last", part)
			}
			for a := from; !to.Less(a); a = a.Next() {
				out = append(out, a)
				if len(out) > 1<<16 {
					return nil, fmt.Errorf("source IPs %q: too many", part)
				}
			}
		default:
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("source IPs %q: %w", part, err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// StartFleet starts a fleet in the background and returns once every device
// is onboarded, or with an error when one fails or timeout passes first. The
// devices run until ctx is done.
func StartFleet(ctx context.Context, cfg FleetConfig, timeout time.Duration) (*Fleet, error) {
	f, err := NewFleet(cfg)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	deadline := time.After(timeout)
	for f.Stats().Ready < int64(cfg.Count) {
		if st := f.Stats(); st.Failed > 0 {
			return nil, fmt.Errorf("fleet: %s while onboarding", st)
		}
		select {
		case err := <-done:
			return nil, fmt.Errorf("fleet stopped while onboarding: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("fleet: %s after %s", f.Stats(), timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return f, nil
}
