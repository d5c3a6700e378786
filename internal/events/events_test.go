package events

import (
	"testing"
	"time"
)

func TestSequencerNeverGoesBack(t *testing.T) {
	clock := time.Unix(100, 0)
	s := NewSequencer(func() time.Time { return clock })
	a := s.Next()
	b := s.Next()
	clock = clock.Add(-time.Hour)
	c := s.Next()
	if !(a < b && b < c) {
		t.Fatalf("sequence not increasing: %d %d %d", a, b, c)
	}
}

func TestEnvelopeRoundTripAndValidation(t *testing.T) {
	e := &Envelope{DeviceID: "d1", Owner: "u1", Type: ResourceChanged, Sequence: 7, Time: time.Unix(1, 0).UTC(), Href: "/light/1", Content: []byte{0xa0}}
	data, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject() != "ocfcloud.events.u1.d1.resource_changed" || got.MsgID() != "d1:7" || string(got.Content) != string(e.Content) {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range []string{`{}`, `not json`, `{"di":"a.b","owner":"u","type":"x","seq":1}`, `{"di":"a","owner":"u>","type":"x","seq":1}`, `{"di":"a","owner":"u","type":"x","seq":0}`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("Decode(%s) accepted", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"di":"a","owner":"u","type":"x","seq":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err == nil && e.Validate() != nil {
			t.Fatal("decoded an invalid envelope")
		}
	})
}
