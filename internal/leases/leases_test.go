package leases

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/platform"
)

func TestLeaseLivesWhileKeptAndExpiresWithoutRenewal(t *testing.T) {
	nc, err := nats.Connect(platform.TestNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	const ttl = time.Second
	kv, err := Open(ctx, js, ttl, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	keepCtx, stop := context.WithCancel(ctx)
	done, err := Keep(keepCtx, kv, "gw-a", ttl, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// A lease that is not renewed (a crashed instance) expires.
	if _, err := kv.PutString(ctx, "gw-crashed", "x"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		alive, err := Alive(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		if !alive["gw-a"] {
			t.Fatal("kept lease expired")
		}
		if !alive["gw-crashed"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unrenewed lease still alive after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A clean stop deletes the lease at once.
	stop()
	<-done
	if alive, _ := Alive(ctx, kv); alive["gw-a"] {
		t.Fatal("lease left after a clean stop")
	}
}
