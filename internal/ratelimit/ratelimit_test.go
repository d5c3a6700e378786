package ratelimit_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/ocfcloud/ocfcloud/internal/ratelimit"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func TestKeySpendsItsBurstThenGetsTheRate(t *testing.T) {
	l := ratelimit.New[string](ratelimit.Options{Rate: 2, Burst: 3})
	for i := range 3 {
		if !l.Allow("10.0.0.1", t0) {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if l.Allow("10.0.0.1", t0) {
		t.Fatal("request past the burst allowed")
	}
	if !l.Allow("10.0.0.2", t0) {
		t.Fatal("another key shares the bucket")
	}
	now := t0.Add(500 * time.Millisecond) // one token at 2/s
	if !l.Allow("10.0.0.1", now) || l.Allow("10.0.0.1", now) {
		t.Fatal("after half a second at 2/s, want exactly one more request")
	}
}

func TestNegativeRateAllowsEverythingAndKeepsNothing(t *testing.T) {
	l := ratelimit.New[string](ratelimit.Options{Rate: -1, Burst: 1})
	for range 100 {
		if !l.Allow("k", t0) {
			t.Fatal("refused with a negative rate")
		}
		l.Record("k", t0)
	}
	if d := l.Delay("k", t0); d != 0 {
		t.Fatalf("Delay = %v, want 0", d)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

// The login throttle's story: failures are recorded after the fact and never
// refused; the next attempt asks first how long it must wait.
func TestRecordedFailuresMakeTheKeyWait(t *testing.T) {
	l := ratelimit.New[string](ratelimit.Options{Rate: rate.Every(time.Minute), Burst: 5, Idle: time.Hour})
	if d := l.Delay("alice", t0); d != 0 {
		t.Fatalf("unknown key: Delay = %v, want 0", d)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Delay created a bucket: Len = %d", n)
	}
	for i := range 5 {
		if d := l.Delay("alice", t0); d != 0 {
			t.Fatalf("after %d failures: Delay = %v, want 0", i, d)
		}
		l.Record("alice", t0)
	}
	if d := l.Delay("alice", t0); d != time.Minute {
		t.Fatalf("after 5 failures: Delay = %v, want 1m", d)
	}
	l.Record("alice", t0) // counted, not refused, and the bucket cannot go below empty
	if d := l.Delay("alice", t0.Add(20*time.Second)); d != 40*time.Second {
		t.Fatalf("20 s later: Delay = %v, want 40s", d)
	}
	if d := l.Delay("alice", t0.Add(time.Minute)); d != 0 {
		t.Fatalf("a minute later: Delay = %v, want 0", d)
	}
	if l.Allow("bob", t0); l.Delay("bob", t0) != 0 {
		t.Fatal("one of bob's five tokens spent, yet he must wait")
	}
}

func TestIdleKeysAreForgottenAtMostOncePerIdle(t *testing.T) {
	l := ratelimit.New[string](ratelimit.Options{Rate: 1, Burst: 1, Idle: time.Minute})
	l.Allow("a", t0)                     // first call sweeps (nothing yet)
	l.Allow("b", t0.Add(30*time.Second)) // no sweep
	l.Allow("c", t0.Add(61*time.Second)) // sweeps: a idle 61 s goes, b idle 31 s stays
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d after the first sweep, want 2 (b, c)", n)
	}
	// b has been idle for 70 s, but the last sweep was 39 s ago.
	l.Allow("d", t0.Add(100*time.Second))
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3: swept again within Idle", n)
	}
	l.Allow("e", t0.Add(122*time.Second)) // sweeps: b and c go, d (22 s) stays
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d after the second sweep, want 2 (d, e)", n)
	}
}

func TestMaxKeysSweepsWithoutWaitingButOnlyForgetsIdleKeys(t *testing.T) {
	for _, tc := range []struct {
		maxKeys int
		want    int
	}{{0, 3}, {1, 2}} {
		l := ratelimit.New[string](ratelimit.Options{Rate: 1, Burst: 1, Idle: time.Hour, MaxKeys: tc.maxKeys})
		l.Allow("a", t0)
		l.Allow("b", t0.Add(30*time.Minute))
		l.Allow("c", t0.Add(61*time.Minute)) // interval sweep: a goes
		// b is idle for 61 min, the last sweep was 31 min ago; c is not idle.
		l.Allow("d", t0.Add(92*time.Minute))
		if n := l.Len(); n != tc.want {
			t.Errorf("MaxKeys %d: Len = %d, want %d", tc.maxKeys, n, tc.want)
		}
	}
}

// By default a key is forgotten once its bucket has refilled, which nobody
// can tell from remembering it.
func TestDefaultIdleIsTheRefillTime(t *testing.T) {
	l := ratelimit.New[string](ratelimit.Options{Rate: 10, Burst: 20}) // refills in 2 s, forgotten after 3 s
	for range 20 {
		l.Allow("a", t0)
	}
	l.Allow("b", t0.Add(2900*time.Millisecond))
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d at 2.9 s, want 2", n)
	}
	now := t0.Add(6 * time.Second)
	l.Allow("b", now) // sweeps: a (idle 6 s) goes, b stays
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d at 6 s, want 1", n)
	}
	for i := range 20 {
		if !l.Allow("a", now) {
			t.Fatalf("forgotten key refused at request %d of its burst", i+1)
		}
	}
}

func TestConcurrentUsersShareOneBurst(t *testing.T) {
	l := ratelimit.New[string](ratelimit.Options{Rate: 1, Burst: 50})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if l.Allow("k", t0) {
					allowed.Add(1)
				}
				l.Delay("k", t0)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 50 {
		t.Fatalf("allowed %d, want the burst of 50", n)
	}
}
