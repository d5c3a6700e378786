package c2capi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"

	c2capi "github.com/ocfcloud/ocfcloud/c2c-api"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

// emptyRegistry knows one device with no resource content yet.
type emptyRegistry struct{}

func (emptyRegistry) List(context.Context, registryapi.ListRequest) (*registryapi.ListResponse, error) {
	return &registryapi.ListResponse{}, nil
}

func (emptyRegistry) Get(_ context.Context, r registryapi.GetRequest) (*registryapi.Device, error) {
	return &registryapi.Device{DeviceID: r.DeviceID, Owner: r.Caller.UserID}, nil
}

func (emptyRegistry) Resource(context.Context, registryapi.ResourceRequest) (*registryapi.Resource, error) {
	return nil, registryapi.ErrNotFound
}

func TestDeliveriesSurviveDispatcherAndNATSRestarts(t *testing.T) {
	// NATS on a fixed port and store, so it can be restarted in place.
	storeDir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv, err := platform.StartNATS(platform.NATSOptions{StoreDir: storeDir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown() }()
	db := platform.TestMongo(t)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// The endpoint fails every 7th request and is a little slow, so that
	// retries and restarts meet deliveries in flight.
	var requests atomic.Int64
	rc := &webhook.Receiver{Secret: signingSecret, Respond: func(webhook.Received) int {
		time.Sleep(time.Millisecond)
		if requests.Add(1)%7 == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}}
	hook := httptest.NewServer(rc)
	defer hook.Close()

	key := make([]byte, 32)
	wc := fastRetries
	wc.SecretsKey = key
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var dispatcherConn *nats.Conn
	newDispatcher := func() *c2capi.Dispatcher {
		dispatcherConn = connect()
		d, err := c2capi.NewDispatcher(context.Background(), c2capi.DispatcherConfig{NATS: dispatcherConn, DB: db, Registry: emptyRegistry{}, Logger: quiet, Webhooks: wc})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := newDispatcher()
	defer func() { d.Close() }()
	const owner, light = "user-1", "d-light"
	devicesSub := &c2capi.Subscription{ID: "00000000-0000-4000-8000-00000000000a", Owner: owner, Level: c2capi.LevelDevices,
		EventTypes: []string{"devices_online", "devices_offline"}, EventsURL: hook.URL, CreatedAt: time.Now()}
	lightSub := &c2capi.Subscription{ID: "00000000-0000-4000-8000-00000000000b", Owner: owner, Level: c2capi.LevelResource,
		DeviceID: light, Href: "/light/1", EventTypes: []string{"resource_contentchanged"}, EventsURL: hook.URL, CreatedAt: time.Now()}
	for _, s := range []*c2capi.Subscription{devicesSub, lightSub} {
		if err := d.Create(context.Background(), s, signingSecret); err != nil {
			t.Fatal(err)
		}
	}

	pubConn := connect()
	js, _ := jetstream.New(pubConn)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	publish := func(e *events.Envelope) {
		e.Owner, e.Sequence, e.Time = owner, seq.Next(), time.Now().UTC()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := pub.Publish(ctx, e) // the same envelope again is deduplicated
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	const n = 300 // events per subscription
	for i := range n {
		typ := events.DeviceOnline
		if i%2 == 1 {
			typ = events.DeviceOffline
		}
		publish(&events.Envelope{DeviceID: fmt.Sprintf("dev-%04d", i), Type: typ})
		content, _ := json.Marshal(map[string]int{"i": i})
		publish(&events.Envelope{DeviceID: light, Type: events.ResourceChanged, Href: "/light/1", ContentType: events.ContentTypeJSON, Content: content})
		switch i {
		case n / 3: // the dispatcher crashes mid-delivery: its acks are lost
			t.Logf("dispatcher crash after %d of %d deliveries", len(rc.Received()), 2*(i+1)+2)
			dispatcherConn.Close()
			d.Close()
			d = newDispatcher()
		case 2 * n / 3: // restart NATS mid-delivery
			t.Logf("NATS restart after %d of %d deliveries", len(rc.Received()), 2*(i+1)+2)
			srv.Shutdown()
			if srv, err = platform.StartNATS(platform.NATSOptions{StoreDir: storeDir, Port: port}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Every event arrives at least once, in order per subscription, with
	// numbers 0,1,2,... and a webhook-id that is stable across repeats.
	got := waitDeliveries(t, rc, devicesSub.ID, "every devices event", func(rs []webhook.Received) bool { return len(rs) >= n+2 })
	for i, r := range got[2:] {
		var b struct {
			Content []struct {
				DI string `json:"di"`
			} `json:"content"`
		}
		_ = json.Unmarshal(r.Body, &b)
		wantType := "devices_online"
		if i%2 == 1 {
			wantType = "devices_offline"
		}
		if len(b.Content) != 1 || b.Content[0].DI != fmt.Sprintf("dev-%04d", i) || r.EventType != wantType {
			t.Fatalf("devices delivery %d: %s %s", r.Sequence, r.EventType, r.Body)
		}
	}
	got = waitDeliveries(t, rc, lightSub.ID, "every light change", func(rs []webhook.Received) bool { return len(rs) >= n })
	for i, r := range got {
		if string(r.Body) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("light delivery %d: %s", r.Sequence, r.Body)
		}
	}
	if len(got) != n {
		t.Fatalf("light: %d distinct deliveries, want %d", len(got), n)
	}
	total := 0
	for _, r := range rc.Received() {
		if r.SubscriptionID == lightSub.ID {
			total++
		}
	}
	t.Logf("light: %d requests accepted for %d events (%d repeats); %d requests in all", total, n, total-n, requests.Load())
}

func TestReplicasShareDeliveryAndTakeOverTheFanout(t *testing.T) {
	natsURL := platform.TestNATS(t)
	db := platform.TestMongo(t)
	rc := &webhook.Receiver{Secret: signingSecret}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	wc := fastRetries
	wc.SecretsKey = make([]byte, 32)
	wc.FanoutLease = time.Second
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func() *c2capi.Dispatcher {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		d, err := c2capi.NewDispatcher(context.Background(), c2capi.DispatcherConfig{NATS: nc, DB: db, Registry: emptyRegistry{}, Logger: quiet, Webhooks: wc})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := start(), start()
	defer b.Close()
	const owner = "user-2"
	sub := &c2capi.Subscription{ID: "00000000-0000-4000-8000-0000000000c1", Owner: owner, Level: c2capi.LevelDevices,
		EventTypes: []string{"devices_online"}, EventsURL: hook.URL, CreatedAt: time.Now()}
	if err := a.Create(context.Background(), sub, signingSecret); err != nil {
		t.Fatal(err)
	}
	// The other replica learns about it through the broadcast.
	waitFor(t, "replica b knows the subscription", func() bool {
		_, err := b.Get(sub.ID, registryapi.Caller{UserID: owner})
		return err == nil
	})

	nc, _ := nats.Connect(natsURL)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	const n = 200
	for i := range n {
		if i == n/2 {
			a.Close() // the fan-out's holder leaves; b takes over
		}
		e := &events.Envelope{DeviceID: fmt.Sprintf("dev-%04d", i), Owner: owner, Type: events.DeviceOnline, Sequence: seq.Next(), Time: time.Now().UTC()}
		if err := pub.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	waitDeliveries(t, rc, sub.ID, "every event through the new fan-out", func(rs []webhook.Received) bool { return len(rs) == n+1 })
	// A replica without the lease cancels: the lease holder numbers the
	// cancellation after everything queued.
	c := start()
	defer c.Close()
	if err := c.Delete(context.Background(), sub.ID, registryapi.Caller{UserID: owner}, ""); err != nil {
		t.Fatal(err)
	}
	got := waitDeliveries(t, rc, sub.ID, "every event, then the cancellation", func(rs []webhook.Received) bool {
		return len(rs) > 0 && rs[len(rs)-1].EventType == "subscription_cancelled"
	})
	if len(got) != n+2 {
		t.Fatalf("%d deliveries, want %d: %v", len(got), n+2, seqs(got))
	}
	for i, r := range got[1 : n+1] {
		if !strings.Contains(string(r.Body), fmt.Sprintf("dev-%04d", i)) {
			t.Fatalf("delivery %d: %s", r.Sequence, r.Body)
		}
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFailingDeliveryIsRetriedThenDroppedWithAnAuditLine(t *testing.T) {
	natsURL := platform.TestNATS(t)
	db := platform.TestMongo(t)
	var attempts atomic.Int64
	rc := &webhook.Receiver{Secret: signingSecret, Respond: func(r webhook.Received) int {
		if strings.Contains(string(r.Body), "dev-bad") {
			attempts.Add(1)
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	wc := fastRetries
	wc.SecretsKey = make([]byte, 32)
	wc.RetryPeriod = 800 * time.Millisecond
	var logs syncBuffer
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	d, err := c2capi.NewDispatcher(context.Background(), c2capi.DispatcherConfig{NATS: nc, DB: db, Registry: emptyRegistry{}, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Webhooks: wc})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const owner = "user-3"
	sub := &c2capi.Subscription{ID: "00000000-0000-4000-8000-0000000000d1", Owner: owner, Level: c2capi.LevelDevices,
		EventTypes: []string{"devices_online"}, EventsURL: hook.URL, CreatedAt: time.Now()}
	if err := d.Create(context.Background(), sub, signingSecret); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	for _, di := range []string{"dev-bad", "dev-good"} {
		e := &events.Envelope{DeviceID: di, Owner: owner, Type: events.DeviceOnline, Sequence: seq.Next(), Time: time.Now().UTC()}
		if err := pub.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	// The failing delivery holds the one behind it until it is given up.
	got := waitAny(t, rc, sub.ID, "the event behind the dropped one", func(rs []webhook.Received) bool {
		return len(rs) > 0 && strings.Contains(string(rs[len(rs)-1].Body), "dev-good")
	})
	if n := attempts.Load(); n < 3 {
		t.Fatalf("%d attempts before dropping; want retries with backoff", n)
	}
	if len(got) != 2 || got[1].Sequence != 2 {
		t.Fatalf("deliveries %v", seqs(got))
	}
	if l := logs.String(); !strings.Contains(l, "webhook delivery dropped after the retry period") || !strings.Contains(l, "audit=true") || strings.Contains(l, signingSecret) {
		t.Fatalf("audit log:\n%s", l)
	}
}

func TestSigningSecretsAreEncryptedWithAKeyOutsideTheDatabase(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secrets.key")
	key, err := c2capi.LoadOrCreateSecretsKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c2capi.LoadOrCreateSecretsKey(keyFile)
	if fi, serr := os.Stat(keyFile); err != nil || serr != nil || fi.Mode().Perm() != 0o600 || string(again) != string(key) {
		t.Fatalf("key file: %v %v %v", err, serr, fi)
	}
	if _, err := c2capi.ReadSecretsKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing key file was accepted")
	}
	if k, err := c2capi.ParseSecretsKey(base64.StdEncoding.EncodeToString(key)); err != nil || string(k) != string(key) {
		t.Fatalf("base64 key: %v", err)
	}

	natsURL := platform.TestNATS(t)
	db := platform.TestMongo(t)
	start := func(key []byte) (*c2capi.Dispatcher, error) {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		wc := fastRetries
		wc.SecretsKey = key
		return c2capi.NewDispatcher(context.Background(), c2capi.DispatcherConfig{NATS: nc, DB: db, Registry: emptyRegistry{},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Webhooks: wc})
	}
	d, err := start(key)
	if err != nil {
		t.Fatal(err)
	}
	sub := &c2capi.Subscription{ID: "00000000-0000-4000-8000-0000000000e1", Owner: "u", Level: c2capi.LevelDevices,
		EventTypes: []string{"devices_online"}, EventsURL: "http://127.0.0.1:9/", CreatedAt: time.Now()}
	if err := d.Create(context.Background(), sub, signingSecret); err != nil {
		t.Fatal(err)
	}
	d.Close()
	raw, err := db.Collection("subscriptions").FindOne(context.Background(), bson.M{"_id": sub.ID}).Raw()
	if err != nil || strings.Contains(string(raw), signingSecret) || strings.Contains(string(raw), string(key)) {
		t.Fatalf("stored document: %v %q", err, raw)
	}
	other := make([]byte, 32)
	other[0] = 1
	if _, err := start(other); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("another key: %v", err)
	}
	d, err = start(key)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}
