package leases

import (
	"context"
	"io"
	"log/slog"
	"net"
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
	done, err := Keep(keepCtx, kv, "gw-a", ttl, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
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

// After NATS was away longer than the lease lives, the first renewal tells
// the holder (afterLapse), which may have been declared lost meanwhile.
func TestRenewalAfterALapseIsReported(t *testing.T) {
	store := t.TempDir()
	start := func(port int) *platform.NATS {
		n, err := platform.StartNATS(platform.NATSOptions{StoreDir: store, Port: port})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// A fixed port, so clients reconnect to the restarted server.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	ns := start(port)
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	kv, err := Open(ctx, js, ttl, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	lapses := make(chan struct{}, 4)
	keepCtx, stop := context.WithCancel(ctx)
	defer stop()
	if _, err := Keep(keepCtx, kv, "gw-a", ttl, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { lapses <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lapses:
		t.Fatal("a lapse reported while renewals succeed")
	case <-time.After(3 * ttl):
	}
	ns.Shutdown()
	time.Sleep(2 * ttl)
	ns = start(port)
	defer ns.Shutdown()
	select {
	case <-lapses:
	case <-time.After(10 * time.Second):
		t.Fatal("no lapse reported after NATS was away for twice the lease's life")
	}
}
