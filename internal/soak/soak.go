package soak

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
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
	// Samples is how many rows the table has; default 10.
	Samples int
}

// Result is the verdict of a run.
type Result struct {
	HeapGrowth      float64 // last sample / first sample after warm-up
	GoroutineGrowth float64
	Errors          int
}

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
	errorsSeen := &countingHandler{}
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
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	fctx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	fmt.Fprintf(out, "soak: %d devices changing every %s for %s against %s\n", o.Devices, o.ChangeEvery, o.Duration, base)
	fleet, err := devicesim.StartFleet(fctx, devicesim.FleetConfig{
		Count:  o.Devices,
		Device: devicesim.Config{ChangeEvery: o.ChangeEvery, Logger: quiet},
		Codes:  &devicesim.APICodes{BaseURL: base, Token: token},
	}, 10*time.Minute)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; cloud and devices in one process\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
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
		fmt.Fprintf(out, "| %s | %.1f MiB | %d | %d | %d |\n", time.Since(start).Round(time.Second), float64(s.heap)/(1<<20), s.goroutines, fleet.Stats().Ready, errorsSeen.count())
	}
	first, last := samples[0], samples[len(samples)-1]
	r := &Result{
		HeapGrowth:      float64(last.heap) / float64(first.heap),
		GoroutineGrowth: float64(last.goroutines) / float64(first.goroutines),
		Errors:          errorsSeen.count(),
	}
	fmt.Fprintf(out, "\nheap last/first: %.2f, goroutines last/first: %.2f, error log lines: %d\n", r.HeapGrowth, r.GoroutineGrowth, r.Errors)
	return r, nil
}

// countingHandler counts error records and drops everything else.
type countingHandler struct {
	n atomicInt
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *countingHandler) Handle(context.Context, slog.Record) error    { h.n.add(); return nil }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *countingHandler) WithGroup(string) slog.Handler                { return h }
func (h *countingHandler) count() int                                   { return h.n.load() }
