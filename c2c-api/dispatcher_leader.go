package c2capi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// Only one process fans out at a time: it holds a lease, a key in a KV
// bucket whose entries expire after the lease time unless renewed. The
// others keep delivering (every subscription's consumer allows one
// message in flight, whichever replica takes it) and take over the fan-out
// when the lease lapses.
const (
	leaderBucket = "OCFCLOUD_WEBHOOK_LEADER"
	leaderKey    = "fanout"
)

// startLeading opens the lease bucket, makes a first attempt at the lease
// (so a lone process fans out at once) and keeps trying in the background.
func (d *Dispatcher) startLeading(ctx context.Context) error {
	var kv jetstream.KeyValue
	if err := platform.Retry(ctx, time.Minute, func(ctx context.Context) (err error) {
		kv, err = d.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: leaderBucket, TTL: d.cfg.FanoutLease, History: 1, Storage: jetstream.FileStorage, Replicas: d.cfg.StreamReplicas,
		})
		return err
	}); err != nil {
		return fmt.Errorf("webhook lease bucket: %w", err)
	}
	d.leaderKV = kv
	d.leaderDone = make(chan struct{})
	l := &lease{}
	d.tryLead(ctx, l)
	go d.leadLoop(l)
	return nil
}

type lease struct {
	held    bool
	rev     uint64
	renewed time.Time
}

func (d *Dispatcher) leadLoop(l *lease) {
	defer close(d.leaderDone)
	t := time.NewTicker(d.cfg.FanoutLease / 3)
	defer t.Stop()
	for {
		select {
		case <-d.closing:
			if l.held {
				d.leaseAt.Store(0)
				d.stopFanout()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = d.leaderKV.Delete(ctx, leaderKey, jetstream.LastRevision(l.rev))
				cancel()
			}
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.FanoutLease/3)
		d.tryLead(ctx, l)
		cancel()
	}
}

// tryLead renews a held lease or tries to take a free one. A lease counts
// from the moment its request was sent, not from the answer: the entry's
// lifetime starts when the server stores it, which is after the request left
// and may be well before a slow answer arrives.
func (d *Dispatcher) tryLead(ctx context.Context, l *lease) {
	if l.held {
		sent := time.Now()
		rev, err := d.leaderKV.Update(ctx, leaderKey, []byte(d.instance), l.rev)
		if err == nil {
			l.rev, l.renewed = rev, sent
			d.leaseAt.Store(sent.UnixNano())
			return
		}
		// Keep fanning out through a short outage, but never past the
		// point where another process may have taken the lease.
		var apiErr *jetstream.APIError
		lost := errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
		if !lost && time.Since(l.renewed) < d.cfg.FanoutLease*2/3 {
			return
		}
		d.log.Warn("webhook fan-out lease lost", "err", err)
		d.leaseAt.Store(0)
		d.stopFanout()
		l.held = false
	}
	sent := time.Now()
	rev, err := d.leaderKV.Create(ctx, leaderKey, []byte(d.instance))
	if err != nil {
		// Our own lease from before a reconnect (or a renewal whose answer
		// was lost) is still ours; renew it, since how long it has left is
		// unknown.
		e, gerr := d.leaderKV.Get(ctx, leaderKey)
		if gerr != nil || string(e.Value()) != d.instance {
			return
		}
		sent = time.Now()
		if rev, err = d.leaderKV.Update(ctx, leaderKey, []byte(d.instance), e.Revision()); err != nil {
			return
		}
	}
	l.held, l.rev, l.renewed = true, rev, sent
	d.leaseAt.Store(sent.UnixNano())
	if err := d.startFanout(ctx); err != nil {
		d.log.Warn("webhook fan-out start", "err", err)
		d.leaseAt.Store(0)
		d.stopFanout()
		_ = d.leaderKV.Delete(ctx, leaderKey, jetstream.LastRevision(l.rev))
		l.held = false
	}
}

// startFanout begins fanning out from the saved position. Counters are
// recovered from the stream first: another process may have numbered
// deliveries since this one last did.
//
// The fan-out reads the event stream in order (an ordered consumer
// recreates itself after reconnects), so one device's events are never
// reordered by redeliveries; the position and every subscription's last
// source make a replay harmless.
func (d *Dispatcher) startFanout(ctx context.Context) error {
	pos, err := d.loadPosition(ctx, d.evStream)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.pos = pos
	d.leading.Store(true)
	var errs []error
	for _, st := range d.subs {
		st.last, st.source = seqUnknown, 0
		// A cancellation made while no process held the lease.
		if st.sub.Cancelled && !st.gone {
			errs = append(errs, d.ensureCancelQueuedLocked(ctx, st))
		}
	}
	d.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("webhook fan-out: queue cancellations: %w", err)
	}
	cons, err := d.evStream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectAll}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: pos + 1,
	})
	if err != nil {
		return fmt.Errorf("webhook fan-out consumer: %w", err)
	}
	d.inbox, d.fanDone = make(chan jetstream.Msg, 1024), make(chan struct{})
	go fanoutLoop(d.inbox, d.fanDone, d.fanoutBatch)
	inbox := d.inbox
	if d.fanout, err = cons.Consume(func(m jetstream.Msg) { inbox <- m }, events.ConsumeOptions(jetstream.ConsumeErrHandler(d.consumeError))...); err != nil {
		return fmt.Errorf("webhook fan-out: %w", err)
	}
	d.log.Info("webhook fan-out started", "position", pos)
	return nil
}

func (d *Dispatcher) stopFanout() {
	if d.fanout != nil {
		d.fanout.Stop()
		<-d.fanout.Closed()
		d.fanout = nil
	}
	if d.inbox != nil {
		close(d.inbox)
		<-d.fanDone
		d.inbox = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d.mu.Lock()
	_ = d.flushSeqLocked(ctx) // best effort: a successor recovers anyway
	d.leading.Store(false)
	d.mu.Unlock()
}

// leaseFresh reports whether this process renewed the fan-out lease
// recently enough that no other process can hold it: the lease's entry
// expires FanoutLease after the last renewal, so appends stop at 2/3 of
// that. Renewals run every third of the lease.
func (d *Dispatcher) leaseFresh() bool {
	at := d.leaseAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < d.cfg.FanoutLease*2/3
}
