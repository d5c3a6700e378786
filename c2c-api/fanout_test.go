package c2capi

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// numbered is an event the loop tests can tell apart.
type numbered struct {
	jetstream.Msg
	n int
}

// runLoop sends n events through fanoutLoop and returns what handle saw.
func runLoop(t *testing.T, n int, handle func([]jetstream.Msg) bool) {
	t.Helper()
	inbox, done := make(chan jetstream.Msg, 8), make(chan struct{})
	go fanoutLoop(inbox, done, handle)
	for i := range n {
		inbox <- numbered{n: i}
	}
	close(inbox)
	<-done
}

func TestFanoutLoopHandlesEveryEventInOrderInBoundedBatches(t *testing.T) {
	var got []int
	runLoop(t, 3*fanoutBatch, func(batch []jetstream.Msg) bool {
		if len(batch) == 0 || len(batch) > fanoutBatch {
			t.Errorf("batch of %d", len(batch))
		}
		for _, m := range batch {
			got = append(got, m.(numbered).n)
		}
		return true
	})
	if len(got) != 3*fanoutBatch {
		t.Fatalf("%d events handled, want %d", len(got), 3*fanoutBatch)
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("event %d handled at position %d", n, i)
		}
	}
}

// A batch given up (closing, lease lost) may still have appends in flight:
// the loop must not go on with later events, or the counters recovered
// before those appends land would give a later event the same number (a CI
// run saw two deliveries numbered 97 this way).
func TestFanoutLoopHandlesNothingAfterABatchIsGivenUp(t *testing.T) {
	calls, first := 0, -1
	runLoop(t, 1000, func(batch []jetstream.Msg) bool {
		calls++
		if first < 0 {
			first = batch[0].(numbered).n
		}
		return false
	})
	if calls != 1 || first != 0 {
		t.Fatalf("handle called %d times after giving up (first event %d); want once, from event 0", calls, first)
	}
}
