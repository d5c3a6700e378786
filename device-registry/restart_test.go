package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// TestTwinSurvivesRegistryAndNATSRestartsMidStream publishes a steady stream
// of resource changes while first the registry and then the NATS server are
// stopped and started again on the same data. At the end every resource's
// twin holds the last content published for it: nothing acknowledged to the
// publisher was lost and nothing older overwrote anything newer.
func TestTwinSurvivesRegistryAndNATSRestartsMidStream(t *testing.T) {
	storeDir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	startNATS := func() *platform.NATS {
		n, err := platform.StartNATS(platform.NATSOptions{StoreDir: storeDir, Port: port})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ns := startNATS()
	defer func() { ns.Shutdown() }()
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	regConn, pubConn := connect(), connect()
	db := platform.TestMongo(t)
	ctx := context.Background()
	start := func() *Registry {
		for deadline := time.Now().Add(20 * time.Second); ; {
			r, err := New(ctx, Config{NATS: regConn, DB: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r := start()

	js, _ := jetstream.New(pubConn)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	const devices, total = 20, 3000
	var mu sync.Mutex
	var published atomic.Int64
	last := map[string]uint64{} // di → last sequence the stream acknowledged
	publish := func(i int) {
		di := fmt.Sprintf("00000000-0000-4000-8000-%012d", i%devices)
		content, _ := ocf.Marshal(map[string]any{"n": i})
		e := &events.Envelope{DeviceID: di, Owner: "u", Type: events.ResourceChanged, Href: "/light/1", Sequence: seq.Next(), Time: time.Now().UTC(), ContentType: events.ContentTypeOCFCBOR, Content: content}
		// Like a gateway: retry until the stream acknowledges (same msg id,
		// so a retry of something that did land is deduplicated).
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := pub.Publish(pctx, e)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		last[di] = e.Sequence
		mu.Unlock()
		published.Add(1)
	}
	links, _ := json.Marshal(events.ResourcesPublishedContent{Links: []ocf.Link{{Href: "/light/1", Policy: &ocf.Policy{BitMask: 3}}}})
	for i := range devices { // every device publishes its link first
		di := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if err := pub.Publish(ctx, &events.Envelope{DeviceID: di, Owner: "u", Type: events.ResourcesPublished, Sequence: seq.Next(), Time: time.Now().UTC(), ContentType: events.ContentTypeJSON, Content: links}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			publish(i)
		}
	}()
	// Faults are injected when the stream has reached a given point, so the
	// test does the same thing on a fast and on a slow machine.
	waitPublished := func(n int) {
		for published.Load() < int64(n) {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	waitPublished(total / 3)
	r.Close()   // the registry stops mid-stream…
	r = start() // …and comes back
	waitPublished(2 * total / 3)
	ns.Shutdown()    // NATS stops mid-stream…
	ns = startNATS() // …and comes back on the same store
	<-done
	defer r.Close()

	cli := registryapi.NewClient(pubConn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		mismatch := ""
		mu.Lock()
		for di, want := range last {
			res, err := cli.Resource(ctx, registryapi.ResourceRequest{Caller: registryapi.Caller{Admin: true}, DeviceID: di, Href: "/light/1"})
			if err != nil || res.Sequence != want {
				mismatch = fmt.Sprintf("%s: twin %v (err %v), want sequence %d", di, res, err, want)
				break
			}
		}
		mu.Unlock()
		if mismatch == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(mismatch)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
