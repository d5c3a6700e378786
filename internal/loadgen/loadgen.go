package loadgen

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// Options shape a run.
type Options struct {
	Workers  int           // concurrent workers; default 64
	Duration time.Duration // default 5 s
	// Rate, when > 0, starts requests at this many per second (open loop);
	// 0 runs each worker back to back (closed loop).
	Rate float64
	// Warmup runs before measuring; default 500 ms.
	Warmup time.Duration
}

// Result is what a run measured.
type Result struct {
	Requests int64
	Errors   int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	Max      time.Duration
	// FirstError is the first error a request returned, for diagnosis.
	FirstError error
}

// PerSecond is the successful request rate.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests-r.Errors) / r.Elapsed.Seconds()
}

// Run calls do from the configured workers and measures it. do gets the
// worker index so it can keep per-worker state (connections, devices).
func Run(ctx context.Context, o Options, do func(ctx context.Context, worker int) error) Result {
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 500 * time.Millisecond
	}
	// The generator allocates about as much per request as the server; its
	// collections pause the goroutines that take the timestamps and show up
	// as latency the server never caused. Collect as servers do (see
	// platform.TuneGC) while measuring, unless GOGC is set.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(platform.ServerGCPercent))
	}
	if o.Warmup > 0 {
		run(ctx, o.Workers, o.Warmup, o.Rate, do, nil)
	}
	lat := make([][]time.Duration, o.Workers)
	res := run(ctx, o.Workers, o.Duration, o.Rate, do, lat)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if n := len(all); n > 0 {
		res.P50 = all[n/2]
		res.P99 = all[min(n-1, n*99/100)]
		res.Max = all[n-1]
	}
	return res
}

func run(ctx context.Context, workers int, d time.Duration, rate float64, do func(context.Context, int) error, lat [][]time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var requests, errs atomic.Int64
	var firstErr atomic.Value
	var ticks chan struct{}
	if rate > 0 {
		ticks = make(chan struct{}, workers)
		go pace(ctx, rate, ticks)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if ticks != nil {
					select {
					case <-ticks:
					case <-ctx.Done():
						return
					}
				}
				t0 := time.Now()
				err := do(ctx, w)
				if ctx.Err() != nil { // cut off by the end of the run: not a result
					return
				}
				requests.Add(1)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if lat != nil {
					lat[w] = append(lat[w], time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	r := Result{Requests: requests.Load(), Errors: errs.Load(), Elapsed: time.Since(start)}
	if e, ok := firstErr.Load().(error); ok {
		r.FirstError = e
	}
	return r
}

// pace releases one request every 1/rate seconds; when workers fall behind,
// the schedule is not made up later (no burst), which keeps the offered load
// honest.
func pace(ctx context.Context, rate float64, ticks chan<- struct{}) {
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		select {
		case ticks <- struct{}{}:
		case <-ctx.Done():
			return
		default: // every worker busy: drop this tick
		}
	}
}

// Row is one line of a results table.
type Row struct {
	Name   string
	Result Result
	// Note is free text, e.g. the ratio to a baseline.
	Note string
}

// WriteTable prints rows as a Markdown table.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| run | requests/s | p50 | p99 | errors | note |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %d | %s |\n", r.Name, r.Result.PerSecond(), round(r.Result.P50), round(r.Result.P99), r.Result.Errors, r.Note)
	}
}

func round(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}
