package loadgen

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestClosedLoopCountsRequestsAndErrors(t *testing.T) {
	n := 0
	res := Run(context.Background(), Options{Workers: 1, Duration: 100 * time.Millisecond, Warmup: -1}, func(context.Context, int) error {
		n++
		if n%2 == 0 {
			return errors.New("even")
		}
		return nil
	})
	if res.Requests == 0 || res.Errors != res.Requests/2 || res.FirstError == nil || res.P99 < res.P50 {
		t.Fatalf("result %+v", res)
	}
}

func TestOpenLoopKeepsTheRate(t *testing.T) {
	res := Run(context.Background(), Options{Workers: 4, Duration: 500 * time.Millisecond, Rate: 100, Warmup: -1}, func(context.Context, int) error { return nil })
	// 100/s for 0.5 s is 50 requests; the pacer never bursts above that,
	// however the workers are scheduled.
	if res.Requests > 51 || res.Requests == 0 {
		t.Fatalf("open loop at 100/s made %d requests in 0.5 s", res.Requests)
	}
}
