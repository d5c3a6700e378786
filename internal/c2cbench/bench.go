package c2cbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/loadgen"
)

// Options configure a benchmark run.
type Options struct {
	Workers  int           // concurrent HTTP clients; default 64
	Duration time.Duration // per measured run; default 5 s
	// LiveRate is the offered rate of the latency run for live updates;
	// default 2,500/s.
	LiveRate float64
	// Devices is the number of simulated devices that live updates are
	// spread over (a device handles a few requests at a time); default 16.
	Devices int
}

const adminPassword = "bench-admin-secret"

// Run starts a cloud in a temporary directory, onboards one simulated
// device and prints a Markdown table of the measurements to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.LiveRate <= 0 {
		o.LiveRate = 2500
	}
	if o.Devices <= 0 {
		o.Devices = 16
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := cloud.Scratch(ctx, adminPassword, quiet)
	if err != nil {
		return err
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Workers * 2, MaxIdleConns: o.Workers * 4, DisableCompression: true}}

	fmt.Fprintf(out, "setting up: cloud on %s, %d simulated devices\n", base, o.Devices)
	token, err := devicesim.PasswordToken(ctx, client, base, "admin", adminPassword)
	if err != nil {
		return err
	}
	dctx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	fleet, err := devicesim.StartFleet(dctx, devicesim.FleetConfig{
		Count: o.Devices, Device: devicesim.Config{Logger: quiet},
		Codes: &devicesim.APICodes{BaseURL: base, Token: token, HTTP: client},
	}, 60*time.Second)
	if err != nil {
		return err
	}
	lights := make([]string, 0, o.Devices)
	for _, dev := range fleet.Devices() {
		lights = append(lights, base+"/api/v1/devices/"+dev.DeviceID()+"/light/1")
	}
	twinURL := lights[0]
	var twin []byte
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range lights {
		for {
			status, body, err := call(ctx, client, http.MethodGet, u, token, nil)
			if err == nil && status == http.StatusOK {
				twin = body
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("twin not readable after 30 s: %d %v", status, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The ceiling: a bare handler answering the same bytes, same transport.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bare := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(twin)
	})}
	go func() { _ = bare.Serve(ln) }()
	defer bare.Close()
	bareURL := "http://" + ln.Addr().String() + "/"

	expect := func(want int, method, u string, body []byte) func(context.Context, int) error {
		return func(ctx context.Context, _ int) error {
			status, b, err := call(ctx, client, method, u, token, body)
			if err != nil {
				return err
			}
			if status != want {
				return fmt.Errorf("%s %s: %d %s", method, u, status, b)
			}
			return nil
		}
	}
	lo := loadgen.Options{Workers: o.Workers, Duration: o.Duration}
	fmt.Fprintf(out, "measuring: %d workers, %s per run\n", o.Workers, o.Duration)
	bareRes := loadgen.Run(ctx, lo, expect(http.StatusOK, http.MethodGet, bareURL, nil))
	twinRes := loadgen.Run(ctx, lo, expect(http.StatusOK, http.MethodGet, twinURL, nil))
	half := twinRes.PerSecond() / 2
	halfRes := loadgen.Run(ctx, loadgen.Options{Workers: o.Workers, Duration: o.Duration, Rate: half}, expect(http.StatusOK, http.MethodGet, twinURL, nil))
	update := []byte(`{"power":5}`)
	updates := func(ctx context.Context, worker int) error {
		return expect(http.StatusOK, http.MethodPost, lights[worker%len(lights)], update)(ctx, worker)
	}
	liveRes := loadgen.Run(ctx, lo, updates)
	liveRateRes := loadgen.Run(ctx, loadgen.Options{Workers: o.Workers, Duration: o.Duration, Rate: o.LiveRate}, updates)

	// Forged tokens: the admin token's header and claims with a random
	// signature, a different one each request, so each costs a signature
	// check and none can be answered from a cache.
	var heapBefore, heapAfter runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heapBefore)
	var forgedN, refused, limited atomic.Int64
	forgedRes := loadgen.Run(ctx, lo, func(ctx context.Context, _ int) error {
		status, b, err := call(ctx, client, http.MethodGet, base+"/api/v1/devices", forge(token, forgedN.Add(1)), nil)
		if err != nil {
			return err
		}
		switch status {
		case http.StatusUnauthorized: // the signature was checked
			refused.Add(1)
		case http.StatusTooManyRequests: // the address's budget of failed checks is spent
			limited.Add(1)
		default:
			return fmt.Errorf("forged token: %d %s", status, b)
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&heapAfter)

	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; load generator in the same process\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	loadgen.WriteTable(out, []loadgen.Row{
		{Name: "bare net/http, same bytes (ceiling)", Result: bareRes},
		{Name: "twin read GET /api/v1/devices/{id}/light/1", Result: twinRes, Note: fmt.Sprintf("%.0f %% of ceiling (target ≥ 50 %%)", 100*twinRes.PerSecond()/bareRes.PerSecond())},
		{Name: fmt.Sprintf("twin read at half load (%.0f/s offered)", half), Result: halfRes, Note: "target p99 ≤ 5 ms"},
		{Name: fmt.Sprintf("live POST through gateway and device (%d devices)", len(lights)), Result: liveRes, Note: "target ≥ 5,000/s"},
		{Name: fmt.Sprintf("live POST at %.0f/s offered", o.LiveRate), Result: liveRateRes, Note: "target p99 ≤ 10 ms"},
		{Name: "forged tokens from one address, a new signature each", Result: forgedRes, Note: fmt.Sprintf("%d × 401, %d × 429; Go heap %.0f → %.0f MiB after GC",
			refused.Load(), limited.Load(), float64(heapBefore.HeapInuse)/(1<<20), float64(heapAfter.HeapInuse)/(1<<20))},
	})
	for _, r := range []loadgen.Result{bareRes, twinRes, halfRes, liveRes, liveRateRes, forgedRes} {
		if r.FirstError != nil {
			fmt.Fprintf(out, "\nfirst error: %v\n", r.FirstError)
			break
		}
	}
	return nil
}

func call(ctx context.Context, c *http.Client, method, u, token string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// forge returns token with its signature replaced by random bytes and n
// in the signature's place, so that no two forged tokens are equal.
func forge(token string, n int64) string {
	i := strings.LastIndexByte(token, '.')
	sig := make([]byte, 64)
	_, _ = rand.Read(sig)
	sig[0], sig[1], sig[2], sig[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return token[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}
