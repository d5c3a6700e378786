package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

// Options configure a soak run.
type Options struct {
	Duration time.Duration // default 30 min
	Devices  int           // default 1,000
	// ChangeEvery is how often each device changes /light/1; default 10 s.
	ChangeEvery time.Duration
	// Samples is how many rows the table has; default 10. The first row is
	// taken one row's interval after every device is online (the warm-up),
	// and is the baseline of the verdict.
	Samples int
	// FleetCommand, when set, runs the devices in a child process: the
	// command (e.g. the ocfcloud binary and "device-sim") gets --count,
	// --api-url, --username, --change-every and --log-level, and the
	// password in $OCFCLOUD_PASSWORD. The samples then measure the cloud
	// alone, and the fleet's connections do not count against this
	// process's open files: a device holds one on each side, so 10,000 in
	// one process need 20,000, the limit on our machines. Empty: the
	// devices run in this process.
	FleetCommand []string
	// OnboardTimeout bounds the wait for every device to be online;
	// default 10 min.
	OnboardTimeout time.Duration
}

// Bounds are the pass condition of a run: what the last sample may add to
// the first, and how many error lines the cloud may log.
type Bounds struct {
	// MaxHeapGrowth is the largest allowed last/first ratio of the heap
	// in use (after a GC); default 1.5.
	MaxHeapGrowth float64
	// MaxGoroutineGrowth is the largest allowed increase of the goroutine
	// count as a fraction of the first sample; default 0.05. Goroutines of
	// a steady fleet are a fixed number per device, so a leak of one per
	// request shows within minutes, long before it shows in the heap.
	MaxGoroutineGrowth float64
	// MaxErrors is how many error records the cloud may log; default 0.
	MaxErrors int
}

// DefaultBounds is the pass condition of `ocfcloud bench soak`.
var DefaultBounds = Bounds{MaxHeapGrowth: 1.5, MaxGoroutineGrowth: 0.05}

// Result is what a run measured.
type Result struct {
	HeapGrowth      float64 // last sample / first sample after warm-up
	GoroutineGrowth float64
	FirstHeap       uint64 // bytes in use at the first and the last sample
	LastHeap        uint64
	FirstGoroutines int
	LastGoroutines  int
	Errors          int
	FirstError      string // the first error line the cloud logged
	// DeviceErrors counts error lines of a FleetCommand fleet (a device that
	// gives up); they count against Bounds.MaxErrors too.
	DeviceErrors int
}

// ErrNotFlat is returned by Verdict when a run exceeded its bounds.
var ErrNotFlat = errors.New("soak: not flat")

// Verdict checks r against b and names every bound it exceeds.
func (r *Result) Verdict(b Bounds) error {
	var why []string
	if r.HeapGrowth > b.MaxHeapGrowth {
		why = append(why, fmt.Sprintf("heap grew x%.2f (%.1f → %.1f MiB), limit x%.2f", r.HeapGrowth, mib(r.FirstHeap), mib(r.LastHeap), b.MaxHeapGrowth))
	}
	if limit := float64(r.FirstGoroutines) * (1 + b.MaxGoroutineGrowth); float64(r.LastGoroutines) > limit {
		why = append(why, fmt.Sprintf("goroutines grew from %d to %d, limit %d (+%.0f%%)", r.FirstGoroutines, r.LastGoroutines, int(limit), 100*b.MaxGoroutineGrowth))
	}
	if r.Errors+r.DeviceErrors > b.MaxErrors {
		why = append(why, fmt.Sprintf("%d error lines logged by the cloud and %d by the devices (limit %d), the cloud's first: %s", r.Errors, r.DeviceErrors, b.MaxErrors, r.FirstError))
	}
	if len(why) > 0 {
		return fmt.Errorf("%w: %s", ErrNotFlat, strings.Join(why, "; "))
	}
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// Run soaks a fresh cloud and prints a Markdown table to out.
func Run(ctx context.Context, o Options, out io.Writer) (*Result, error) {
	if o.Duration <= 0 {
		o.Duration = 30 * time.Minute
	}
	if o.Devices <= 0 {
		o.Devices = 1000
	}
	if o.ChangeEvery <= 0 {
		o.ChangeEvery = 10 * time.Second
	}
	if o.Samples <= 1 {
		o.Samples = 10
	}
	errorsSeen := newErrorLog()
	log := slog.New(errorsSeen)
	const password = "soak-admin-secret"
	c, err := cloud.Scratch(ctx, password, log)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	token, err := devicesim.PasswordToken(ctx, http.DefaultClient, base, "admin", password)
	if err != nil {
		return nil, err
	}
	if o.OnboardTimeout <= 0 {
		o.OnboardTimeout = 10 * time.Minute
	}
	online := func() int {
		// A fresh token per sample: a long soak outlives one.
		token, err := devicesim.PasswordToken(ctx, http.DefaultClient, base, "admin", password)
		if err != nil {
			return -1
		}
		return countOnline(ctx, base, token)
	}
	fctx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	fmt.Fprintf(out, "soak: %d devices changing every %s for %s against %s\n", o.Devices, o.ChangeEvery, o.Duration, base)
	where := "cloud and devices in one process"
	var deviceErrors *atomicInt
	if len(o.FleetCommand) > 0 {
		where = "devices in a child process"
		var fleetDone <-chan error
		deviceErrors, fleetDone, err = startFleetProcess(fctx, o, base, password, out)
		if err != nil {
			return nil, err
		}
		deadline := time.After(o.OnboardTimeout)
		for online() < o.Devices {
			select {
			case err := <-fleetDone:
				return nil, fmt.Errorf("fleet process ended while onboarding: %v", err)
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-deadline:
				return nil, fmt.Errorf("soak: %d of %d devices online after %s", online(), o.Devices, o.OnboardTimeout)
			case <-time.After(2 * time.Second):
			}
		}
	} else {
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		if _, err := devicesim.StartFleet(fctx, devicesim.FleetConfig{
			Count:  o.Devices,
			Device: devicesim.Config{ChangeEvery: o.ChangeEvery, Logger: quiet},
			Codes:  &devicesim.APICodes{BaseURL: base, Token: token},
		}, o.OnboardTimeout); err != nil {
			return nil, err
		}
	}

	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; %s\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), where)
	fmt.Fprintln(out, "| elapsed | heap in use | goroutines | devices online | errors logged |")
	fmt.Fprintln(out, "|---:|---:|---:|---:|---:|")
	type sample struct {
		heap       uint64
		goroutines int
	}
	var samples []sample
	every := o.Duration / time.Duration(o.Samples)
	start := time.Now()
	for i := 1; i <= o.Samples; i++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Until(start.Add(time.Duration(i) * every))):
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := sample{heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
		samples = append(samples, s)
		fmt.Fprintf(out, "| %s | %.1f MiB | %d | %d | %d |\n", time.Since(start).Round(time.Second), float64(s.heap)/(1<<20), s.goroutines, online(), errorsSeen.count()+deviceErrors.load())
	}
	first, last := samples[0], samples[len(samples)-1]
	r := &Result{
		HeapGrowth:      float64(last.heap) / float64(first.heap),
		GoroutineGrowth: float64(last.goroutines) / float64(first.goroutines),
		FirstHeap:       first.heap,
		LastHeap:        last.heap,
		FirstGoroutines: first.goroutines,
		LastGoroutines:  last.goroutines,
		Errors:          errorsSeen.count(),
		FirstError:      errorsSeen.firstLine(),
		DeviceErrors:    deviceErrors.load(),
	}
	fmt.Fprintf(out, "\nheap last/first: %.2f, goroutines last/first: %.2f (%d → %d), error log lines: %d (cloud), %d (devices)\n", r.HeapGrowth, r.GoroutineGrowth, r.FirstGoroutines, r.LastGoroutines, r.Errors, r.DeviceErrors)
	return r, nil
}

// errorLog is a slog handler that counts error records and keeps the first
// one as text; it drops everything else.
type errorLog struct {
	state *errorState
	attrs []slog.Attr // service, device_id, … for the first line
}

type errorState struct {
	n     atomicInt
	mu    sync.Mutex
	first string
}

func newErrorLog() *errorLog { return &errorLog{state: &errorState{}} }

func (h *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	if h.state.n.add() > 1 {
		return nil
	}
	var b strings.Builder
	_ = slog.NewTextHandler(&b, nil).WithAttrs(h.attrs).Handle(context.Background(), r)
	h.state.mu.Lock()
	h.state.first = strings.TrimSpace(b.String())
	h.state.mu.Unlock()
	return nil
}

func (h *errorLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorLog{state: h.state, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *errorLog) WithGroup(string) slog.Handler { return h }

func (h *errorLog) count() int { return h.state.n.load() }

func (h *errorLog) firstLine() string {
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	return h.state.first
}
