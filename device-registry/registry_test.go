package registry

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/leases"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

type harness struct {
	t   *testing.T
	nc  *nats.Conn
	pub *events.Publisher
	cli *registryapi.Client
	seq *events.Sequencer
}

func newHarness(t *testing.T) (*harness, func() *Registry) {
	t.Helper()
	nc, err := nats.Connect(platform.TestNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	db := platform.TestMongo(t)
	start := func() *Registry {
		r, err := New(context.Background(), Config{NATS: nc, DB: db})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	return &harness{t: t, nc: nc, pub: events.NewPublisher(js), cli: registryapi.NewClient(nc), seq: events.NewSequencer(nil)}, start
}

func (h *harness) publish(e *events.Envelope) {
	h.t.Helper()
	if e.Sequence == 0 {
		e.Sequence = h.seq.Next()
	}
	e.Time = time.Now().UTC()
	if err := h.pub.Publish(context.Background(), e); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegistryBuildsTwinFromEventsAndKeepsItAcrossRestart(t *testing.T) {
	h, start := newHarness(t)
	r := start()
	ctx := context.Background()
	owner, other := "user-1", "user-2"
	di := "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8"

	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.DeviceRegistered})
	links, _ := json.Marshal(events.ResourcesPublishedContent{Links: []ocf.Link{
		{Href: "/oic/d", RT: []string{"oic.wk.d", "oic.d.light"}},
		{Href: "/light/1", RT: []string{"core.light"}, Policy: &ocf.Policy{BitMask: 3}},
	}})
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.ResourcesPublished, ContentType: events.ContentTypeJSON, Content: links})
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.DeviceOnline})
	dcontent, _ := ocf.Marshal(ocf.DeviceInfo{Name: "kitchen", DeviceID: di, RT: []string{"oic.wk.d", "oic.d.light"}})
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.ResourceChanged, Href: "/oic/d", ContentType: events.ContentTypeOCFCBOR, Content: dcontent})
	light, _ := ocf.Marshal(map[string]any{"state": true, "power": 5})
	newest := h.seq.Next() + 1000
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.ResourceChanged, Href: "/light/1", ContentType: events.ContentTypeOCFCBOR, Content: light, Sequence: newest})
	// An older notification arriving late must not overwrite the newer one.
	stale, _ := ocf.Marshal(map[string]any{"state": false, "power": 0})
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.ResourceChanged, Href: "/light/1", ContentType: events.ContentTypeOCFCBOR, Content: stale, Sequence: newest - 1})

	owned := registryapi.Caller{UserID: owner}
	h.waitFor("twin of /light/1", func() bool {
		res, err := h.cli.Resource(ctx, registryapi.ResourceRequest{Caller: owned, DeviceID: di, Href: "/light/1"})
		return err == nil && res.Sequence == newest
	})
	check := func() {
		t.Helper()
		list, err := h.cli.List(ctx, registryapi.ListRequest{Caller: owned})
		if err != nil {
			t.Fatal(err)
		}
		if list.Total != 1 || list.Devices[0].Name != "kitchen" || !list.Devices[0].Online || len(list.Devices[0].Links) != 2 {
			t.Fatalf("list: %+v", list)
		}
		res, err := h.cli.Resource(ctx, registryapi.ResourceRequest{Caller: owned, DeviceID: di, Href: "/light/1"})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := ocf.Unmarshal(res.Content, &got); err != nil || got["state"] != true {
			t.Fatalf("twin content %v %v", got, err)
		}
		if _, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: registryapi.Caller{UserID: other}, DeviceID: di}); !errors.Is(err, registryapi.ErrNotFound) {
			t.Fatalf("other user sees device: %v", err)
		}
		if l, _ := h.cli.List(ctx, registryapi.ListRequest{Caller: registryapi.Caller{UserID: "admin", Admin: true}}); l.Total != 1 {
			t.Fatalf("admin list: %+v", l)
		}
	}
	check()

	r.Close()
	r2 := start()
	defer r2.Close()
	check()

	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.DeviceUnregistered})
	h.waitFor("device gone", func() bool {
		_, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: owned, DeviceID: di})
		return errors.Is(err, registryapi.ErrNotFound)
	})
	// Late events of the forgotten device (a gateway that had not heard of
	// the offboarding yet) do not bring it back…
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.DeviceOnline})
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.ResourceChanged, Href: "/light/1", ContentType: events.ContentTypeOCFCBOR, Content: light})
	marker := "0d0e0a0d-0000-4000-8000-000000000001"
	h.publish(&events.Envelope{DeviceID: marker, Owner: owner, Type: events.DeviceRegistered})
	h.waitFor("marker registered", func() bool {
		_, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: owned, DeviceID: marker})
		return err == nil
	})
	if _, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: owned, DeviceID: di}); !errors.Is(err, registryapi.ErrNotFound) {
		t.Fatalf("forgotten device came back: %v", err)
	}
	// …a new sign-up does, with nothing of its old life.
	h.publish(&events.Envelope{DeviceID: di, Owner: owner, Type: events.DeviceRegistered})
	h.waitFor("device registered again", func() bool {
		d, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: owned, DeviceID: di})
		return err == nil && len(d.Links) == 0 && !d.Online
	})
	r2.Close()
	r3 := start() // and the tombstone is durable: a restart keeps the device as it is
	defer r3.Close()
	if d, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: owned, DeviceID: di}); err != nil || len(d.Links) != 0 {
		t.Fatalf("after restart: %+v %v", d, err)
	}
}

func TestMalformedQueryIsBadRequest(t *testing.T) {
	h, start := newHarness(t)
	r := start()
	defer r.Close()
	msg, err := h.nc.Request(registryapi.SubjectList, []byte("{not json"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Nats-Service-Error-Code") != registryapi.CodeBadRequest {
		t.Fatalf("headers %v", msg.Header)
	}
}

func TestDevicesOfALostGatewayGoOffline(t *testing.T) {
	h, _ := newHarness(t)
	js, _ := jetstream.New(h.nc)
	ctx := context.Background()
	r, err := New(ctx, Config{NATS: h.nc, DB: platform.TestMongo(t), LeaseTTL: time.Second, SweepEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	kv, err := leases.Open(ctx, js, time.Second, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	// gw-live keeps renewing; gw-crashed wrote its lease once and died.
	keepCtx, stop := context.WithCancel(ctx)
	defer stop()
	if _, err := leases.Keep(keepCtx, kv, "gw-live", time.Second, r.log, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "gw-crashed", "x"); err != nil {
		t.Fatal(err)
	}
	online := func(di, gw string) {
		c, _ := json.Marshal(events.OnlineContent{Gateway: gw})
		h.publish(&events.Envelope{DeviceID: di, Owner: "u", Type: events.DeviceOnline, ContentType: events.ContentTypeJSON, Content: c})
	}
	online("dev-a", "gw-crashed")
	online("dev-b", "gw-crashed")
	online("dev-c", "gw-live")
	admin := registryapi.Caller{Admin: true}
	isOnline := func(di string) bool {
		d, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: admin, DeviceID: di})
		return err == nil && d.Online
	}
	h.waitFor("all three devices online", func() bool {
		return isOnline("dev-a") && isOnline("dev-b") && isOnline("dev-c")
	})
	h.waitFor("devices of the crashed gateway offline", func() bool {
		return !isOnline("dev-a") && !isOnline("dev-b")
	})
	if !isOnline("dev-c") {
		t.Fatal("device of the live gateway went offline")
	}
	// A device that reconnects through a live gateway is online again.
	online("dev-a", "gw-live")
	h.waitFor("dev-a back online", func() bool { return isOnline("dev-a") })
}

func TestGoodbyeFromAnOldGatewayDoesNotTakeAMovedDeviceOffline(t *testing.T) {
	h, start := newHarness(t)
	r := start()
	defer r.Close()
	ctx := context.Background()
	const di = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
	online, _ := json.Marshal(events.OnlineContent{Gateway: "gw-b"})
	h.publish(&events.Envelope{DeviceID: di, Owner: "u", Type: events.DeviceOnline, ContentType: events.ContentTypeJSON, Content: online})
	// Gateway A's offline event for the old connection arrives after the
	// device is online through B, with a newer sequence (another clock).
	bye, _ := json.Marshal(events.OfflineContent{Gateway: "gw-a", Reason: "disconnected"})
	h.publish(&events.Envelope{DeviceID: di, Owner: "u", Type: events.DeviceOffline, ContentType: events.ContentTypeJSON, Content: bye})
	marker := "3c4d5e6f-0000-4000-8000-000000000000"
	h.publish(&events.Envelope{DeviceID: marker, Owner: "u", Type: events.DeviceRegistered})
	admin := registryapi.Caller{Admin: true}
	h.waitFor("marker applied", func() bool {
		_, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: admin, DeviceID: marker})
		return err == nil
	})
	if d, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: admin, DeviceID: di}); err != nil || !d.Online {
		t.Fatalf("device taken offline by the old gateway: %+v %v", d, err)
	}
	// B's own goodbye does take it offline.
	byeB, _ := json.Marshal(events.OfflineContent{Gateway: "gw-b", Reason: "disconnected"})
	h.publish(&events.Envelope{DeviceID: di, Owner: "u", Type: events.DeviceOffline, ContentType: events.ContentTypeJSON, Content: byeB})
	h.waitFor("offline through its own gateway", func() bool {
		d, err := h.cli.Get(ctx, registryapi.GetRequest{Caller: admin, DeviceID: di})
		return err == nil && !d.Online
	})
}
