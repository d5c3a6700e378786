package devicesim

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/pool"
)

type ackLog struct {
	mu   sync.Mutex
	acks []Ack
}

func (l *ackLog) add(a Ack) { l.mu.Lock(); l.acks = append(l.acks, a); l.mu.Unlock() }

func (l *ackLog) all() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Ack(nil), l.acks...)
}

func TestNotificationsAreAcknowledgedByTheNextPong(t *testing.T) {
	f := newFakeCloud(t)
	p := newStallProxy(t, f.addr)
	var log ackLog
	d, _ := startDevice(t, f, func(c *Config) { c.CIS = "coap+tcp://" + p.addr; c.Acknowledged = log.add })
	waitReady(t, d, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.conn(1).Observe(ctx, "/light/1", func(*pool.Message) {}, ocfOptions()...); err != nil {
		t.Fatalf("observe: %v", err)
	}
	d.SetLight(true, 42)
	waitFor(t, 5*time.Second, "the observe answer and the notification acknowledged", func() bool { return len(log.all()) == 2 })
	acks := log.all()
	var v lightState
	if err := json.Unmarshal(acks[1].Value, &v); err != nil || !v.State || v.Power != 42 {
		t.Errorf("acknowledged %s, want state true, power 42 (%v)", acks[1].Value, err)
	}
	for _, a := range acks {
		if a.DeviceID != d.DeviceID() || a.Href != "/light/1" || a.Acked.Before(a.Sent) {
			t.Errorf("ack %+v", a)
		}
	}
	if acks[1].Seq <= acks[0].Seq {
		t.Errorf("sequence numbers %d then %d", acks[0].Seq, acks[1].Seq)
	}

	// Without pongs nothing more is acknowledged, not even after the
	// device gives up on the link.
	p.stall()
	d.SetLight(false, 43)
	waitFor(t, 10*time.Second, "a publish on a second connection", func() bool { return f.isPublished(2) })
	time.Sleep(3 * 200 * time.Millisecond) // three ping intervals on the new link
	for _, a := range log.all()[2:] {
		t.Errorf("acknowledged without a pong: %s", a.Value)
	}
}
