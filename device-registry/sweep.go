package registry

import (
	"context"
	"encoding/json"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/leases"
)

// sweepLoop marks the devices of gateways whose lease expired offline.
func (r *Registry) sweepLoop(ctx context.Context) {
	defer close(r.sweepDone)
	t := time.NewTicker(r.cfg.SweepEvery)
	defer t.Stop()
	// Devices for which an offline event is published but not yet applied,
	// with the online sequence it answers, so a sweep does not repeat it.
	pending := map[string]uint64{}
	var blind sweepBlindness
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.sweep(ctx, pending, &blind, now)
		}
	}
}

// sweepBlindness remembers that the registry could not read the leases
// (NATS away): the gateways could not renew theirs either, so right after
// it can read them again, an expired lease does not mean a lost gateway.
// Sweeps judge again once a lease lifetime has passed since, time enough
// for every live gateway to renew.
type sweepBlindness struct {
	blind bool      // the last read failed
	until time.Time // no judgement before this
}

type orphan struct {
	deviceID, owner, gateway string
	onlineSeq                uint64
}

func (r *Registry) sweep(ctx context.Context, pending map[string]uint64, b *sweepBlindness, now time.Time) {
	qctx, cancel := context.WithTimeout(ctx, r.cfg.SweepEvery)
	alive, err := leases.Alive(qctx, r.leases)
	cancel()
	if err != nil {
		r.log.Warn("cannot read gateway leases", "err", err)
		b.blind = true
		return
	}
	if b.blind {
		b.blind, b.until = false, now.Add(r.cfg.LeaseTTL)
	}
	if now.Before(b.until) {
		return
	}
	var orphans []orphan
	r.mu.RLock()
	for di, d := range r.idx.devices {
		if d.online.Online && d.online.Gateway != "" && !alive[d.online.Gateway] && pending[di] != d.online.Sequence {
			orphans = append(orphans, orphan{di, d.doc.Owner, d.online.Gateway, d.online.Sequence})
		}
	}
	for di, seq := range pending {
		if d := r.idx.devices[di]; d == nil || !d.online.Online || d.online.Sequence != seq {
			delete(pending, di) // applied or superseded
		}
	}
	r.mu.RUnlock()
	for _, o := range orphans {
		content, _ := json.Marshal(events.OfflineContent{Gateway: o.gateway, Reason: "gateway_lost"})
		e := &events.Envelope{DeviceID: o.deviceID, Owner: o.owner, Type: events.DeviceOffline, Sequence: r.seq.Next(),
			Time: r.cfg.Now().UTC(), ContentType: events.ContentTypeJSON, Content: content}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.pub.Publish(pctx, e)
		cancel()
		if err != nil {
			r.log.Warn("cannot mark device of a lost gateway offline", "device_id", o.deviceID, "err", err)
			return
		}
		pending[o.deviceID] = o.onlineSeq
	}
	if len(orphans) > 0 {
		r.log.Info("marked devices of lost gateways offline", "devices", len(orphans))
	}
}
