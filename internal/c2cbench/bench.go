package c2cbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/gatewaybench"
	"github.com/ocfcloud/ocfcloud/internal/loadgen"
	"github.com/ocfcloud/ocfcloud/internal/platform"
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
	// InProcess runs the cloud and the ceiling's server in this process.
	// By default each runs in a child process (Spawn), as a server runs in
	// production: then the load generator's allocations do not trigger the
	// server's garbage collections, which otherwise set the latency tail.
	InProcess bool
	// Spawn starts a server child process of role "cloud" or "bare" (with
	// args) that prints "ready <host:port>"; default re-runs this
	// executable as `bench c2c --role <role> -- <args>`.
	Spawn func(role string, args ...string) (*gatewaybench.Process, error)
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
	if o.Spawn == nil {
		o.Spawn = spawnSelf
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var base string
	var cloudProc *gatewaybench.Process // nil in process
	if o.InProcess {
		c, err := cloud.Scratch(ctx, adminPassword, quiet)
		if err != nil {
			return err
		}
		defer c.Close()
		base = "http://" + c.HTTPAddr()
	} else {
		p, err := o.Spawn("cloud")
		if err != nil {
			return fmt.Errorf("cloud process: %w", err)
		}
		defer p.Stop()
		base = "http://" + p.Addr
		cloudProc = p
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Workers * 2, MaxIdleConns: o.Workers * 4, DisableCompression: true}}

	fmt.Fprintf(out, "setting up: cloud on %s, %d simulated devices\n", base, o.Devices)
	token, err := devicesim.PasswordToken(ctx, client, base, "admin", adminPassword)
	if err != nil {
		return err
	}
	dctx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	var deviceIDs []string
	if o.InProcess {
		fleet, err := devicesim.StartFleet(dctx, devicesim.FleetConfig{
			Count: o.Devices, Device: devicesim.Config{Logger: quiet},
			Codes: &devicesim.APICodes{BaseURL: base, Token: token, HTTP: client},
		}, 60*time.Second)
		if err != nil {
			return err
		}
		for _, dev := range fleet.Devices() {
			deviceIDs = append(deviceIDs, dev.DeviceID())
		}
	} else {
		// The devices in a process of their own too, as devices are remote:
		// their answers are not delayed by the load generator.
		stop, err := startDeviceProcess(dctx, base, o.Devices)
		if err != nil {
			return err
		}
		defer stop()
		if deviceIDs, err = onlineDevices(ctx, client, base, token, o.Devices, 60*time.Second); err != nil {
			return err
		}
	}
	lights := make([]string, 0, o.Devices)
	for _, di := range deviceIDs {
		lights = append(lights, base+"/api/v1/devices/"+di+"/light/1")
	}
	twinURL := lights[0]
	var twin []byte
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range lights {
		for {
			status, body, err := Call(ctx, client, http.MethodGet, u, token, nil)
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

	// The ceiling: a bare handler answering the same bytes, same transport,
	// in a process of its own like the cloud.
	var bareURL string
	if o.InProcess {
		addr, stop, err := serveBare(twin)
		if err != nil {
			return err
		}
		defer stop()
		bareURL = "http://" + addr + "/"
	} else {
		p, err := o.Spawn("bare", "--body", base64.StdEncoding.EncodeToString(twin))
		if err != nil {
			return fmt.Errorf("ceiling process: %w", err)
		}
		defer p.Stop()
		bareURL = "http://" + p.Addr + "/"
	}

	expect := func(want int, method, u string, body []byte) func(context.Context, int) error {
		return func(ctx context.Context, _ int) error {
			status, b, err := Call(ctx, client, method, u, token, body)
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
	// Each run starts on an idle cloud: a run at full rate leaves work
	// behind (the events of 30,000 live updates are still being applied to
	// twins), which would otherwise land in the next run's latencies.
	settle := func(next string) {
		if cloudProc == nil {
			return
		}
		if waited := cloudProc.WaitIdle(30 * time.Second); waited > time.Second {
			fmt.Fprintf(out, "waited %v for the cloud to go idle before %s\n", waited.Round(100*time.Millisecond), next)
		}
	}
	settle("the ceiling run")
	bareRes := loadgen.Run(ctx, lo, expect(http.StatusOK, http.MethodGet, bareURL, nil))
	settle("the twin read run")
	twinRes := loadgen.Run(ctx, lo, expect(http.StatusOK, http.MethodGet, twinURL, nil))
	half := twinRes.PerSecond() / 2
	settle("the half-load run")
	halfRes := loadgen.Run(ctx, loadgen.Options{Workers: o.Workers, Duration: o.Duration, Rate: half}, expect(http.StatusOK, http.MethodGet, twinURL, nil))
	update := []byte(`{"power":5}`)
	updates := func(ctx context.Context, worker int) error {
		return expect(http.StatusOK, http.MethodPost, lights[worker%len(lights)], update)(ctx, worker)
	}
	settle("the live POST run")
	liveRes := loadgen.Run(ctx, lo, updates)
	settle(fmt.Sprintf("the live POST run at %.0f/s", o.LiveRate))
	liveRateRes := loadgen.Run(ctx, loadgen.Options{Workers: o.Workers, Duration: o.Duration, Rate: o.LiveRate}, updates)
	settle("the forged-token run")

	// Forged tokens: the admin token's header and claims with a random
	// signature, a different one each request, so each costs a signature
	// check and none can be answered from a cache.
	var heapBefore, heapAfter runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heapBefore)
	var forgedN, refused, limited atomic.Int64
	forgedRes := loadgen.Run(ctx, lo, func(ctx context.Context, _ int) error {
		status, b, err := Call(ctx, client, http.MethodGet, base+"/api/v1/devices", forge(token, forgedN.Add(1)), nil)
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

	where := "cloud, ceiling and simulated devices (GOMAXPROCS=1) each in a child process, load generator in this one"
	if o.InProcess {
		where = "cloud, ceiling and load generator in one process"
	}
	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; %s\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), where)
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

// Call sends one request with an optional Bearer token and JSON body and
// reads the whole answer. It is the one request of the C2C benchmarks: the
// load generator's here and the Go benchmarks' in package c2c-api.
func Call(ctx context.Context, c *http.Client, method, u, token string, body []byte) (int, []byte, error) {
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

// serveBare serves the ceiling, bareHandler(body), on a loopback port.
func serveBare(body []byte) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: bareHandler(body)}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func bareHandler(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

func spawnSelf(role string, args ...string) (*gatewaybench.Process, error) {
	return gatewaybench.SpawnBenchRole("c2c", role, args...)
}

// ServeRole runs a server child process: "cloud" (a whole cloud on a
// scratch data dir, admin password as the benchmark expects) or "bare"
// (--body: base64 of the bytes to answer). It prints "ready <host:port>"
// and serves until stdin closes.
func ServeRole(ctx context.Context, role string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	body := fs.String("body", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// A server, tuned as `ocfcloud serve` tunes itself.
	platform.TuneGC(nil)
	switch role {
	case "cloud":
		c, err := cloud.Scratch(ctx, adminPassword, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(stdout, "ready %s\n", c.HTTPAddr())
	case "bare":
		b, err := base64.StdEncoding.DecodeString(*body)
		if err != nil {
			return err
		}
		addr, stop, err := serveBare(b)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(stdout, "ready %s\n", addr)
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}

// startDeviceProcess runs `ocfcloud device-sim` with n devices onboarded
// through the C2C API as the admin, in a child process.
func startDeviceProcess(ctx context.Context, base string, n int) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := devicesim.FleetProcess(ctx, devicesim.FleetProcessArgs{
		Command: []string{exe, "device-sim"}, Count: n, APIURL: base, Username: "admin", Password: adminPassword,
	})
	cmd.Stderr = os.Stderr
	// 16 devices need a fraction of a core. With a P per core in each of
	// three processes (cloud, devices, load generator) on two cores, the
	// kernel preempted threads on the request path, and live POSTs, which
	// cross the device process, had p99 spikes of 12–37 ms in one run of
	// three; with one P here, 6 of 6 runs stayed under 6.2 ms.
	cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("device process: %w", err)
	}
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }, nil
}

// onlineDevices waits until n devices are online and returns their ids.
func onlineDevices(ctx context.Context, c *http.Client, base, token string, n int, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ids, _, err := devicesim.OnlineDevices(ctx, c, base, token, 100)
		if err == nil && len(ids) >= n {
			return ids[:n], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d devices not online after %v (%d online, %v)", n, timeout, len(ids), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
