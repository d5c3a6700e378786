package leases

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the KV bucket of gateway leases.
const Bucket = "OCFCLOUD_GATEWAYS"

// DefaultTTL is how long a lease lives without renewal.
const DefaultTTL = 15 * time.Second

// Open opens the lease bucket, creating it if it does not exist yet. An
// existing bucket is used as it is, so processes started with different
// settings do not reconfigure it under each other.
func Open(ctx context.Context, js jetstream.JetStream, ttl time.Duration, replicas int, memory bool) (jetstream.KeyValue, error) {
	if kv, err := js.KeyValue(ctx, Bucket); err == nil {
		return kv, nil
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if replicas <= 0 {
		replicas = 1
	}
	storage := jetstream.FileStorage
	if memory {
		storage = jetstream.MemoryStorage
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, History: 1, TTL: ttl, Storage: storage, Replicas: replicas,
		Description: "liveness leases of coap-gateway instances",
	})
	if errors.Is(err, jetstream.ErrBucketExists) { // created meanwhile by another process
		return js.KeyValue(ctx, Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	return kv, nil
}

// Keep writes the lease of id now and renews it every ttl/3 until ctx ends,
// then deletes it (a clean stop needs no expiry). It returns after the first
// write, so a caller can rely on the lease existing.
//
// When a renewal succeeds more than ttl after the last one (NATS was away,
// the process was paused), the lease may have expired meanwhile and a
// registry may have declared the holder's devices lost: afterLapse (when
// not nil) is then called, so the holder can announce them again.
func Keep(ctx context.Context, kv jetstream.KeyValue, id string, ttl time.Duration, log *slog.Logger, afterLapse func()) (done <-chan struct{}, err error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if _, err := kv.PutString(ctx, id, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return nil, fmt.Errorf("lease %s: %w", id, err)
	}
	ch := make(chan struct{})
	last := time.Now()
	go func() {
		defer close(ch)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = kv.Delete(dctx, id)
				cancel()
				return
			case now := <-t.C:
				pctx, cancel := context.WithTimeout(ctx, ttl/3)
				_, err := kv.PutString(pctx, id, now.UTC().Format(time.RFC3339Nano))
				cancel()
				switch {
				case err != nil && ctx.Err() == nil:
					log.Warn("cannot renew gateway lease", "gateway_id", id, "err", err)
				case err == nil:
					lapsed := time.Since(last) > ttl
					last = time.Now()
					if lapsed && afterLapse != nil {
						log.Info("gateway lease renewed after a lapse", "gateway_id", id)
						go afterLapse() // it may publish; renewals go on
					}
				}
			}
		}
	}()
	return ch, nil
}

// Alive returns the ids with a live lease.
func Alive(ctx context.Context, kv jetstream.KeyValue) (map[string]bool, error) {
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		out[k] = true
	}
	return out, nil
}
