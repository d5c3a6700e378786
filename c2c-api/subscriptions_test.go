package c2capi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	c2capi "github.com/ocfcloud/ocfcloud/c2c-api"
	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

const signingSecret = "3BZ6oI9xbRJzOUvUoRb5RgaZjPqHrmql"

// fastRetries keep failing deliveries quick in tests.
var fastRetries = c2capi.WebhookConfig{RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Timeout: 2 * time.Second, FanoutLease: 2 * time.Second}

func startWebhookStack(t *testing.T, wc c2capi.WebhookConfig) *stack {
	t.Helper()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		AdminPassword: adminPassword, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Webhooks: wc,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s := &stack{t: t, c: c, base: "http://" + c.HTTPAddr()}
	s.token = s.passwordToken("")
	var ui struct {
		Sub string `json:"sub"`
	}
	s.getJSON("/userinfo", http.StatusOK, &ui)
	s.sub = ui.Sub
	return s
}

func (s *stack) subscribe(path, eventsURL string, types ...string) string {
	s.t.Helper()
	body, _ := json.Marshal(map[string]any{"eventsUrl": eventsURL, "eventTypes": types, "signingSecret": signingSecret})
	resp, data := s.do(http.MethodPost, path, s.token, strings.NewReader(string(body)), map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusCreated {
		s.t.Fatalf("subscribe %s: %d %s", path, resp.StatusCode, data)
	}
	var out struct {
		SubscriptionID string `json:"subscriptionId"`
	}
	if json.Unmarshal(data, &out) != nil || out.SubscriptionID == "" {
		s.t.Fatalf("subscribe %s: %s", path, data)
	}
	return out.SubscriptionID
}

// forSub returns the deliveries of one subscription without repeats
// (deduplicated on webhook-id, as a receiver would), checking that a
// repeated webhook-id always carries the same sequence number and body.
func forSub(t *testing.T, rc *webhook.Receiver, subID string) []webhook.Received {
	t.Helper()
	seen := map[string]webhook.Received{}
	var out []webhook.Received
	for _, r := range rc.Received() {
		if r.SubscriptionID != subID {
			continue
		}
		if r.WebhookID != fmt.Sprintf("%s:%d", subID, r.Sequence) {
			t.Fatalf("webhook-id %q for sequence %d", r.WebhookID, r.Sequence)
		}
		if prev, ok := seen[r.WebhookID]; ok {
			if string(prev.Body) != string(r.Body) || prev.EventType != r.EventType {
				t.Fatalf("%s redelivered with another body: %s / %s", r.WebhookID, prev.Body, r.Body)
			}
			continue
		}
		seen[r.WebhookID] = r
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b webhook.Received) int { return int(a.Sequence) - int(b.Sequence) })
	return out
}

func waitDeliveries(t *testing.T, rc *webhook.Receiver, subID string, what string, cond func([]webhook.Received) bool) []webhook.Received {
	t.Helper()
	got := waitAny(t, rc, subID, what, cond)
	for i, r := range got {
		if r.Sequence != uint64(i) {
			t.Fatalf("%s: sequence numbers %v are not 0,1,2,...", what, seqs(got))
		}
	}
	return got
}

// waitAny waits without requiring contiguous sequence numbers.
func waitAny(t *testing.T, rc *webhook.Receiver, subID string, what string, cond func([]webhook.Received) bool) []webhook.Received {
	t.Helper()
	var got []webhook.Received
	waitFor(t, what, func() bool {
		got = forSub(t, rc, subID)
		return cond(got)
	})
	return got
}

func seqs(rs []webhook.Received) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%d:%s", r.Sequence, r.EventType))
	}
	return out
}

func lastIs(eventType string, contains string) func([]webhook.Received) bool {
	return func(rs []webhook.Received) bool {
		for _, r := range rs {
			if r.EventType == eventType && strings.Contains(string(r.Body), contains) {
				return true
			}
		}
		return false
	}
}

func TestWebhooksDeliverSignedDeviceEventsInOrder(t *testing.T) {
	s := startWebhookStack(t, fastRetries)
	rc := &webhook.Receiver{Secret: signingSecret}
	hook := httptest.NewServer(rc)
	defer hook.Close()

	const di = "5f0e2c1a-3b4d-4e5f-8a6b-7c8d9e0f1a2b"
	dev, stopDevice := s.onboardDevice(di)
	light := "/api/v1/devices/" + di + "/light/1"
	waitFor(t, "device online", func() bool {
		var d device
		s.getJSON("/api/v1/devices/"+di, http.StatusOK, &d)
		return d.Status == "online"
	})

	devicesSub := s.subscribe("/api/v1/devices/subscriptions", hook.URL, "devices_online", "devices_offline")
	deviceSub := s.subscribe("/api/v1/devices/"+di+"/subscriptions", hook.URL, "resources_published")
	lightSub := s.subscribe(light+"/subscriptions", hook.URL, "resource_contentchanged")

	// The first notification of each type is the current state.
	got := waitDeliveries(t, rc, devicesSub, "initial devices state", func(rs []webhook.Received) bool { return len(rs) >= 2 })
	if got[0].EventType != "devices_online" || !strings.Contains(string(got[0].Body), di) || got[1].EventType != "devices_offline" || strings.Contains(string(got[1].Body), di) {
		t.Fatalf("initial devices state: %s / %s", got[0].Body, got[1].Body)
	}
	got = waitDeliveries(t, rc, deviceSub, "initial links", func(rs []webhook.Received) bool { return len(rs) >= 1 })
	if got[0].EventType != "resources_published" || !strings.Contains(string(got[0].Body), `"/`+di+`/light/1"`) {
		t.Fatalf("initial links: %s", got[0].Body)
	}
	waitDeliveries(t, rc, lightSub, "initial light", func(rs []webhook.Received) bool { return len(rs) >= 1 })

	// Changes follow in order, with increasing sequence numbers.
	if r, b := s.do(http.MethodPost, light, s.token, strings.NewReader(`{"power":9}`), map[string]string{"Content-Type": "application/json"}); r.StatusCode != http.StatusOK {
		t.Fatalf("update: %d %s", r.StatusCode, b)
	}
	waitDeliveries(t, rc, lightSub, "power 9", lastIs("resource_contentchanged", `"power":9`))
	dev.SetLight(true, 4)
	got = waitDeliveries(t, rc, lightSub, "power 4", lastIs("resource_contentchanged", `"power":4`))
	i9 := slices.IndexFunc(got, func(r webhook.Received) bool { return strings.Contains(string(r.Body), `"power":9`) })
	i4 := slices.IndexFunc(got, func(r webhook.Received) bool { return strings.Contains(string(r.Body), `"power":4`) })
	if i9 <= 0 || i4 <= i9 {
		t.Fatalf("light deliveries out of order: %s", seqs(got))
	}

	// Listing and reading subscriptions; never the secret.
	var list []map[string]any
	s.getJSON("/api/v1/subscriptions", http.StatusOK, &list)
	if len(list) != 3 {
		t.Fatalf("list: %v", list)
	}
	_, raw := s.do(http.MethodGet, "/api/v1/subscriptions", s.token, nil, nil)
	if strings.Contains(string(raw), signingSecret) {
		t.Fatal("the signing secret is shown")
	}
	var one map[string]any
	s.getJSON(light+"/subscriptions/"+lightSub, http.StatusOK, &one)
	if one["href"] != "/"+di+"/light/1" || one["level"] != "resource" {
		t.Fatalf("get: %v", one)
	}
	s.getJSON("/api/v1/devices/subscriptions/"+devicesSub, http.StatusOK, nil)
	s.getJSON("/api/v1/devices/"+di+"/subscriptions/"+deviceSub, http.StatusOK, nil)
	s.getJSON("/api/v1/devices/subscriptions/"+deviceSub, http.StatusNotFound, nil) // wrong level

	// The device goes offline, then is offboarded: device and resource
	// subscriptions end with subscription_cancelled.
	stopDevice()
	waitDeliveries(t, rc, devicesSub, "devices_offline", func(rs []webhook.Received) bool {
		return len(rs) > 2 && rs[len(rs)-1].EventType == "devices_offline" && strings.Contains(string(rs[len(rs)-1].Body), di)
	})
	if r, b := s.do(http.MethodDelete, "/api/v1/devices/"+di, s.token, nil, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("offboard: %d %s", r.StatusCode, b)
	}
	for _, sub := range []string{deviceSub, lightSub} {
		waitDeliveries(t, rc, sub, "subscription_cancelled", func(rs []webhook.Received) bool {
			return len(rs) > 0 && rs[len(rs)-1].EventType == "subscription_cancelled"
		})
	}
	waitFor(t, "cancelled subscriptions removed", func() bool {
		var l []map[string]any
		s.getJSON("/api/v1/subscriptions", http.StatusOK, &l)
		return len(l) == 1
	})
	s.getJSON(light+"/subscriptions/"+lightSub, http.StatusNotFound, nil)

	// Unsubscribing: 202, then subscription_cancelled, then gone.
	if r, b := s.do(http.MethodDelete, "/api/v1/devices/subscriptions/"+devicesSub, s.token, nil, nil); r.StatusCode != http.StatusAccepted {
		t.Fatalf("unsubscribe: %d %s", r.StatusCode, b)
	}
	waitDeliveries(t, rc, devicesSub, "subscription_cancelled", func(rs []webhook.Received) bool {
		return len(rs) > 0 && rs[len(rs)-1].EventType == "subscription_cancelled"
	})
	s.getJSON("/api/v1/devices/subscriptions/"+devicesSub, http.StatusNotFound, nil)
	if rc.Rejected() != 0 {
		t.Fatalf("%d deliveries failed signature checks", rc.Rejected())
	}
	for _, r := range rc.Received() {
		if r.ContentType != "application/json" || r.CorrelationID == "" {
			t.Fatalf("delivery headers: %+v", r.Delivery)
		}
	}
}

func TestSubscriptionsRefuseBadInputAndUnsafeURLs(t *testing.T) {
	s := startWebhookStack(t, fastRetries)
	s.seedDevices(1)
	const di = "00000000-0000-4000-8000-000000000000"
	post := func(path, token, body string) (*http.Response, string) {
		r, b := s.do(http.MethodPost, path, token, strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
		return r, string(b)
	}
	ok := `"eventTypes":["devices_online"],"signingSecret":"` + signingSecret + `"`
	for name, c := range map[string]struct {
		path, body, field string
		want              int
	}{
		"metadata address":   {"/api/v1/devices/subscriptions", `{"eventsUrl":"http://169.254.169.254/latest/meta-data/",` + ok + `}`, "eventsUrl", 400},
		"IPv6 link-local":    {"/api/v1/devices/subscriptions", `{"eventsUrl":"http://[fe80::1]:80/",` + ok + `}`, "eventsUrl", 400},
		"not http":           {"/api/v1/devices/subscriptions", `{"eventsUrl":"file:///etc/passwd",` + ok + `}`, "eventsUrl", 400},
		"no url":             {"/api/v1/devices/subscriptions", `{` + ok + `}`, "eventsUrl", 400},
		"short secret":       {"/api/v1/devices/subscriptions", `{"eventsUrl":"http://127.0.0.1:9/","eventTypes":["devices_online"],"signingSecret":"short"}`, "signingSecret", 400},
		"no types":           {"/api/v1/devices/subscriptions", `{"eventsUrl":"http://127.0.0.1:9/","eventTypes":[],"signingSecret":"` + signingSecret + `"}`, "eventTypes", 400},
		"wrong level type":   {"/api/v1/devices/subscriptions", `{"eventsUrl":"http://127.0.0.1:9/","eventTypes":["resource_contentchanged"],"signingSecret":"` + signingSecret + `"}`, "eventTypes", 400},
		"malformed":          {"/api/v1/devices/subscriptions", `{"eventsUrl":`, "body", 400},
		"unknown device":     {"/api/v1/devices/00000000-0000-4000-8000-0000000000ff/subscriptions", `{"eventsUrl":"http://127.0.0.1:9/","eventTypes":["resources_published"],"signingSecret":"` + signingSecret + `"}`, "", 404},
		"unpublished href":   {"/api/v1/devices/" + di + "/nope/subscriptions", `{"eventsUrl":"http://127.0.0.1:9/","eventTypes":["resource_contentchanged"],"signingSecret":"` + signingSecret + `"}`, "nope", 404},
		"device-level types": {"/api/v1/devices/" + di + "/subscriptions", `{"eventsUrl":"http://127.0.0.1:9/",` + ok + `}`, "eventTypes", 400},
	} {
		r, b := post(c.path, s.token, c.body)
		if r.StatusCode != c.want || r.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(b, c.field) {
			t.Errorf("%s: %d %s, want %d naming %q", name, r.StatusCode, b, c.want, c.field)
		}
	}
	// w:subscriptions:* is required, for resource-level paths too.
	ro := s.passwordToken("r:resources:* r:deviceinformation:*")
	for _, path := range []string{"/api/v1/devices/subscriptions", "/api/v1/devices/" + di + "/oic/d/subscriptions"} {
		if r, _ := post(path, ro, `{"eventsUrl":"http://127.0.0.1:9/",`+ok+`}`); r.StatusCode != http.StatusForbidden || !strings.Contains(r.Header.Get("WWW-Authenticate"), "w:subscriptions:*") {
			t.Errorf("%s without scope: %d %v", path, r.StatusCode, r.Header)
		}
	}
	// ... while the resource itself stays readable with r:resources:*.
	if r, b := s.do(http.MethodGet, "/api/v1/devices/"+di+"/oic/d", ro, nil, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("resource read: %d %s", r.StatusCode, b)
	}
	if r, _ := s.do(http.MethodGet, "/api/v1/subscriptions/", s.token, nil, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("GET /api/v1/subscriptions/: %d", r.StatusCode)
	}
}

func TestEndpointAnswering410CancelsItsSubscription(t *testing.T) {
	s := startWebhookStack(t, fastRetries)
	var gone atomic.Bool
	rc := &webhook.Receiver{Secret: signingSecret, Respond: func(r webhook.Received) int {
		if r.Sequence > 0 && r.EventType != "subscription_cancelled" {
			gone.Store(true)
			return http.StatusGone
		}
		return http.StatusOK
	}}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	sub := s.subscribe("/api/v1/devices/subscriptions", hook.URL, "devices_online")
	waitDeliveries(t, rc, sub, "initial state", func(rs []webhook.Received) bool { return len(rs) == 1 })

	nc, err := nats.Connect(s.c.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	for i := range 3 {
		e := &events.Envelope{DeviceID: fmt.Sprintf("gone-%d", i), Owner: s.sub, Type: events.DeviceOnline, Sequence: seq.Next(), Time: time.Now().UTC()}
		if err := pub.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	got := waitAny(t, rc, sub, "subscription_cancelled after 410", func(rs []webhook.Received) bool {
		return len(rs) > 0 && rs[len(rs)-1].EventType == "subscription_cancelled"
	})
	// The 410 answer was the last event delivered: the others queued
	// behind it were dropped, so their numbers are skipped.
	if !gone.Load() || len(got) != 3 || got[1].EventType != "devices_online" || got[1].Sequence != 1 || got[2].Sequence < 2 {
		t.Fatalf("deliveries: %v", seqs(got))
	}
	waitFor(t, "subscription removed", func() bool {
		r, _ := s.do(http.MethodGet, "/api/v1/devices/subscriptions/"+sub, s.token, nil, nil)
		return r.StatusCode == http.StatusNotFound
	})
}
