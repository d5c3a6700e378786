package coapgateway

import (
	"testing"
	"time"
)

// A pong waits for the events queued before its ping, or for its maximum
// delay, and fires once.
func TestAfterStoredWaitsForEarlierEvents(t *testing.T) {
	s := &session{}
	fires := make(chan string, 4)
	fire := func(name string) func() { return func() { fires <- name } }
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-fires:
			if got != want {
				t.Fatalf("fired %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q did not fire", want)
		}
	}
	expectNothing := func() {
		t.Helper()
		select {
		case got := <-fires:
			t.Fatalf("%q fired early", got)
		case <-time.After(20 * time.Millisecond):
		}
	}
	store := s.markStored

	s.afterStored(fire("idle"), time.Hour)
	expect("idle") // nothing pending: at once

	s.enqueued = 2
	s.afterStored(fire("after two"), time.Hour)
	s.enqueued = 3
	s.afterStored(fire("after three"), time.Hour)
	store()
	expectNothing()
	store()
	expect("after two")
	expectNothing()
	store()
	expect("after three")

	s.enqueued = 4
	s.afterStored(fire("slow store"), 10*time.Millisecond)
	expect("slow store") // the store stalls: the maximum delay
	store()
	expectNothing() // not a second time
	if s.barriers != nil {
		t.Errorf("barriers left: %d", len(s.barriers))
	}
}
