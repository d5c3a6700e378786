package gatewaybench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// StormOptions size the reconnect storm across processes: devices spread
// over several gateway processes (one process may hold at most 20,000 open
// files here) and several device processes, all on one NATS.
type StormOptions struct {
	// Devices signed in before the gateways restart. Default 100,000.
	Devices int
	// Gateways is the number of gateway processes. Default 6.
	Gateways int
	// DeviceProcesses is the number of processes simulating the devices.
	// Default 6.
	DeviceProcesses int
	// Parallel bounds the dials and sign-ins in flight per device process
	// (the listen backlog of a gateway is 4,096 here). Default 256.
	Parallel int
	// SourceIPs are the local addresses devices dial from.
	SourceIPs string
	// Spawn starts a child process; default re-runs this executable.
	Spawn func(role string, args []string) (*Process, error)
}

func (o *StormOptions) setDefaults() {
	if o.Devices <= 0 {
		o.Devices = 100_000
	}
	if o.Gateways <= 0 {
		o.Gateways = 6
	}
	if o.DeviceProcesses <= 0 {
		o.DeviceProcesses = 6
	}
	if o.Parallel <= 0 {
		o.Parallel = 256
	}
	if o.SourceIPs == "" {
		o.SourceIPs = "127.0.0.1-127.0.0.254"
	}
	if o.Spawn == nil {
		o.Spawn = spawnSelf
	}
}

// stormGatewayAddr is gateway i's fixed address, so that a restarted
// gateway listens where its devices look for it.
func stormGatewayAddr(i int) string { return fmt.Sprintf("127.0.1.%d:5683", i+1) }

// RunStorm measures the reconnect storm: every device signs in through one
// of the gateway processes and stays connected; then all gateway processes
// are killed (SIGKILL) and started again on the same addresses, and every
// device reconnects and signs in again on its own. It reports the time
// from the restarted gateways listening to the last device signed in, and
// the gateways' memory per device at full size.
func RunStorm(ctx context.Context, o StormOptions, w io.Writer) error {
	o.setDefaults()
	be, err := startBackend(ctx, o.Spawn)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer be.close()
	gwArgs := func(i int) []string {
		// Idle devices send no pings here: the inactivity limit must outlast
		// the run.
		return []string{"--nats-url", be.natsURL(), "--token-url", be.tokenURL(), "--jwks-url", be.jwksURL(),
			"--issuer", be.issuer, "--addr", stormGatewayAddr(i), "--inactivity-timeout", "1h"}
	}
	gws := make([]*Process, o.Gateways)
	stopAll := func(ps []*Process) {
		for _, p := range ps {
			if p != nil {
				p.Stop()
			}
		}
	}
	defer func() { stopAll(gws) }()
	startGateways := func() error {
		return forEach(o.Gateways, func(i int) error {
			p, err := o.Spawn("gateway", gwArgs(i))
			gws[i] = p
			return err
		})
	}
	if err := startGateways(); err != nil {
		return fmt.Errorf("gateway process: %w", err)
	}
	base := make([]Usage, o.Gateways)
	for i, p := range gws {
		if base[i], err = p.RSSAfterGC(); err != nil {
			return err
		}
	}
	addrs := make([]string, o.Gateways)
	for i := range addrs {
		addrs[i] = stormGatewayAddr(i)
	}
	devs := make([]*Process, o.DeviceProcesses)
	defer func() { stopAll(devs) }()
	if err := forEach(o.DeviceProcesses, func(i int) error {
		n := o.Devices / o.DeviceProcesses
		if i < o.Devices%o.DeviceProcesses {
			n++
		}
		p, err := o.Spawn("storm-devices", []string{"--count", strconv.Itoa(n), "--first", strconv.Itoa(i),
			"--gateways", strings.Join(addrs, ","), "--token-url", be.tokenURL(),
			"--parallel", strconv.Itoa(o.Parallel), "--source-ips", o.SourceIPs})
		devs[i] = p
		return err
	}); err != nil {
		return fmt.Errorf("device process: %w", err)
	}
	fmt.Fprintf(w, "reconnect storm: %d devices, %d gateway processes, %d device processes, %d dials in flight per device process\n\n",
		o.Devices, o.Gateways, o.DeviceProcesses, o.Parallel)

	// Phase 1: everyone signs in for the first time.
	t0 := time.Now()
	if err := forEach(len(devs), func(i int) error { return devs[i].command("connect", 15*time.Minute) }); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	if err := waitSignedIn(ctx, devs, o.Devices, 5*time.Minute, w); err != nil {
		return err
	}
	connect := time.Since(t0)
	var rssNow, after, baseSum Usage
	for i, p := range gws {
		r, err := p.RSS()
		if err != nil {
			return err
		}
		rssNow.RSS += r
		u, err := p.RSSAfterGC()
		if err != nil {
			return err
		}
		after.RSS += u.RSS
		after.Heap += u.Heap
		after.Stack += u.Stack
		baseSum.RSS += base[i].RSS
		baseSum.Heap += base[i].Heap
		baseSum.Stack += base[i].Stack
	}
	n := float64(o.Devices)
	fmt.Fprintf(w, "| step | figure |\n|---|---|\n")
	fmt.Fprintf(w, "| first sign-in of all devices (dial + sign-in) | %v, %.0f /s |\n", connect.Round(time.Millisecond), n/connect.Seconds())
	fmt.Fprintf(w, "| gateway RSS per device right after connecting (sum over processes) | %.1f KB |\n", float64(rssNow.RSS-baseSum.RSS)/n/1024)
	fmt.Fprintf(w, "| gateway RSS per device after 2 GCs | %.1f KB (Go heap %.1f KB, stacks %.1f KB) |\n",
		float64(after.RSS-baseSum.RSS)/n/1024, float64(after.Heap-baseSum.Heap)/n/1024, float64(after.Stack-baseSum.Stack)/n/1024)
	for i, p := range gws {
		u, _ := p.RSSAfterGC()
		fmt.Fprintf(w, "| gateway %d (%s) RSS | %.0f MiB |\n", i+1, stormGatewayAddr(i), float64(u.RSS)/(1<<20))
	}

	// Phase 2: the gateways die and come back; devices return on their own.
	killed := time.Now()
	stopAll(gws)
	if err := waitSignedIn(ctx, devs, 0, time.Minute, nil); err != nil {
		return fmt.Errorf("devices did not notice the gateways dying: %w", err)
	}
	restarted := time.Now()
	if err := startGateways(); err != nil {
		return fmt.Errorf("restarting gateways: %w", err)
	}
	listening := time.Now()
	devCPU0 := cpuOf(devs)
	if err := waitSignedIn(ctx, devs, o.Devices, 5*time.Minute, w); err != nil {
		return err
	}
	done := time.Now()
	gwCPU, devCPU := cpuOf(gws), cpuOf(devs)-devCPU0
	fmt.Fprintf(w, "| gateways killed → all devices noticed | %v |\n", restarted.Sub(killed).Round(time.Millisecond))
	fmt.Fprintf(w, "| gateway processes started again (until listening) | %v |\n", listening.Sub(restarted).Round(time.Millisecond))
	fmt.Fprintf(w, "| **restarted gateways listening → all %d devices signed in again** | **%v** (%.0f sign-ins/s) |\n",
		o.Devices, done.Sub(listening).Round(time.Millisecond), n/done.Sub(listening).Seconds())
	fmt.Fprintf(w, "| restart began → all signed in | %v |\n", done.Sub(restarted).Round(time.Millisecond))
	fmt.Fprintf(w, "| CPU per reconnect: gateways / devices (same machine) | %v / %v |\n",
		(gwCPU / time.Duration(o.Devices)).Round(time.Microsecond), (devCPU / time.Duration(o.Devices)).Round(time.Microsecond))
	return nil
}

// forEach runs f(0..n-1) in parallel and joins the errors.
func forEach(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// command sends a line to a child process and waits for its "ok".
func (p *Process) command(cmd string, timeout time.Duration) error {
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		return err
	}
	line, err := p.readLine(timeout)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "ok") {
		return fmt.Errorf("%s: %s", cmd, line)
	}
	return nil
}

// signedIn asks a device process how many of its devices are signed in.
func (p *Process) signedIn() (int, error) {
	if _, err := io.WriteString(p.in, "status\n"); err != nil {
		return 0, err
	}
	line, err := p.readLine(10 * time.Second)
	if err != nil {
		return 0, err
	}
	var n int
	if _, err := fmt.Sscanf(line, "ok signed=%d", &n); err != nil {
		return 0, fmt.Errorf("status: %q", line)
	}
	return n, nil
}

// waitSignedIn polls the device processes until want devices in total are
// signed in.
func waitSignedIn(ctx context.Context, devs []*Process, want int, timeout time.Duration, progress io.Writer) error {
	deadline := time.Now().Add(timeout)
	for {
		total := 0
		for _, p := range devs {
			n, err := p.signedIn()
			if err != nil {
				return err
			}
			total += n
		}
		if progress != nil {
			fmt.Fprintf(progress, "  signed in: %d/%d\r", total, want)
		}
		if total == want {
			if progress != nil {
				fmt.Fprintf(progress, "%*s\r", 40, "")
			}
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d devices signed in after %v", total, want, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ServeStormDevices is a device process of the reconnect storm: on
// "connect" it gets a token for each of its devices, dials its gateway,
// signs in, and from then on keeps each device signed in: a device whose
// connection ends waits a random moment (up to 500 ms, as devices that
// noticed the loss at the same time would) and dials again, backing off
// while the gateway refuses. "status" answers how many are signed in.
func ServeStormDevices(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("storm-devices", flag.ContinueOnError)
	count := fs.Int("count", 1000, "")
	first := fs.Int("first", 0, "index of this process, spreads devices over the gateways")
	gateways := fs.String("gateways", "", "")
	tokenURL := fs.String("token-url", "", "")
	parallel := fs.Int("parallel", 256, "")
	sourceIPs := fs.String("source-ips", "127.0.0.1", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ips, err := devicesim.ParseSourceIPs(*sourceIPs)
	if err != nil {
		return err
	}
	// A load generator collects as the servers it measures do.
	platform.TuneGC(nil)
	gws := strings.Split(*gateways, ",")
	be := &backend{issuer: strings.TrimSuffix(*tokenURL, "/oauth/token"), http: &http.Client{Timeout: 30 * time.Second}}
	var signed atomic.Int64
	sem := make(chan struct{}, *parallel)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fmt.Fprintln(stdout, "ready -")
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "connect":
			devs := make([]stormDevice, *count)
			err := parallelDo(*count, 32, func(i int) error {
				di := devicesim.NewDeviceID()
				tok, err := be.mint(di)
				devs[i] = stormDevice{di: di, token: tok, gw: gws[(i+*first)%len(gws)], src: ips[i%len(ips)]}
				return err
			})
			if err != nil {
				fmt.Fprintf(stdout, "error minting tokens: %v\n", err)
				continue
			}
			for i := range devs {
				go devs[i].keepSignedIn(ctx, sem, &signed)
			}
			fmt.Fprintln(stdout, "ok")
		case "status":
			fmt.Fprintf(stdout, "ok signed=%d\n", signed.Load())
		}
	}
	return nil
}

type stormDevice struct {
	di, token, gw string
	src           netip.Addr
}

func (d *stormDevice) keepSignedIn(ctx context.Context, sem chan struct{}, signed *atomic.Int64) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		sem <- struct{}{}
		dev, err := dialRawDevice(ctx, d.gw, d.src, d.di, benchUser, d.token)
		<-sem
		if err != nil {
			sleep(ctx, backoff/2+rand.N(backoff))
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		signed.Add(1)
		stop := context.AfterFunc(ctx, func() { _ = dev.conn.Close() })
		dev.serve() // until the connection ends
		stop()
		signed.Add(-1)
		sleep(ctx, rand.N(500*time.Millisecond))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// parallelDo runs f(0..n-1) on c goroutines; the first error wins.
func parallelDo(n, c int, f func(i int) error) error {
	_, failed, err := parallel(context.Background(), n, c, nil, "", f)
	if failed > 0 {
		return err
	}
	return nil
}

// cpuOf sums the CPU time (user + system) the processes used so far.
func cpuOf(ps []*Process) time.Duration {
	var total time.Duration
	for _, p := range ps {
		total += p.CPU()
	}
	return total
}

// CPU is the CPU time (user + system) the process used so far, in 10 ms
// steps; 0 when it cannot be read.
func (p *Process) CPU() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces): state is
	// field 3, utime 14 and stime 15, in clock ticks (100/s).
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// WaitIdle waits until the process uses less than a tenth of a core over
// a quarter second, at most max; it returns how long it waited. Benchmarks
// call it between runs, so work a run left behind (events still being
// applied) does not weigh on the next.
func (p *Process) WaitIdle(max time.Duration) time.Duration {
	const window = 250 * time.Millisecond
	start := time.Now()
	for time.Since(start) < max {
		before := p.CPU()
		time.Sleep(window)
		if p.CPU()-before < window/10 {
			break
		}
	}
	return time.Since(start)
}
