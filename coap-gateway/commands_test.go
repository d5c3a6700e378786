package coapgateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

func do(t testing.TB, c *testCloud, di string, req *commands.Request) (*commands.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.client.Do(ctx, di, req)
}

func TestCommandsReachTheDeviceAndChangesComeBackThroughObservation(t *testing.T) {
	c := startTestCloud(t, nil)
	const di = "6f1c2f0e-3c1a-4b7e-9d7a-2b4c8e1f0a11"
	dev := c.runSim(c.code(), di, nil)

	resp, err := do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"})
	if err != nil {
		t.Fatal(err)
	}
	var light map[string]any
	if resp.Code != "2.05" || resp.ContentType != "application/vnd.ocf+cbor" || ocf.Unmarshal(resp.Content, &light) != nil || light["state"] != false {
		t.Fatalf("GET /light/1: %+v (%v)", resp, light)
	}

	// JSON from an application becomes CBOR with integers for the device.
	resp, err = do(t, c, di, &commands.Request{Method: commands.MethodPost, Href: "/light/1", ContentType: "application/json", Content: []byte(`{"state":true,"power":9}`)})
	if err != nil || resp.Code != "2.04" {
		t.Fatalf("POST /light/1: %+v %v", resp, err)
	}
	if state, power, _ := dev.Light(); !state || power != 9 {
		t.Fatalf("device light after POST: %v %v", state, power)
	}
	// The device notifies its observer (the gateway); the twin follows.
	waitFor(t, "twin updated through observation", 20*time.Second, func() bool {
		status, body := c.http(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, "")
		var l map[string]any
		return status == http.StatusOK && json.Unmarshal(body, &l) == nil && l["state"] == true && l["power"] == float64(9)
	})

	// The device's own errors come back as its CoAP code.
	if resp, err := do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/no/such"}); err != nil || resp.Code != "4.04" {
		t.Fatalf("GET /no/such: %+v %v", resp, err)
	}
	if resp, err := do(t, c, di, &commands.Request{Method: commands.MethodPost, Href: "/light/1", ContentType: "application/json", Content: []byte(`{"power":"high"}`)}); err != nil || resp.Code != "4.00" {
		t.Fatalf("bad update: %+v %v", resp, err)
	}
	// What the gateway refuses never reaches the device.
	for name, req := range map[string]*commands.Request{
		"method":       {Method: "PATCH", Href: "/light/1"},
		"href":         {Method: commands.MethodGet, Href: "light/1"},
		"bad JSON":     {Method: commands.MethodPost, Href: "/light/1", ContentType: "application/json", Content: []byte(`{`)},
		"content type": {Method: commands.MethodPost, Href: "/light/1", ContentType: "text/html", Content: []byte(`<p>`)},
	} {
		if resp, err := do(t, c, di, req); !errors.Is(err, commands.ErrBadRequest) || resp.Code != "4.00" {
			t.Errorf("%s: %+v %v, want ErrBadRequest 4.00", name, resp, err)
		}
	}
	// A device no gateway holds: no responders.
	if _, err := do(t, c, "00000000-0000-4000-8000-000000000000", &commands.Request{Method: commands.MethodGet, Href: "/light/1"}); !errors.Is(err, commands.ErrNoGateway) {
		t.Fatalf("unknown device: %v, want ErrNoGateway", err)
	}
}

// A device that takes its time: the gateway answers device_timeout at the
// command's deadline, caps requests in flight, and keeps serving the
// connection (pings, other requests) meanwhile.
func TestSlowDeviceTimesOutAndPendingRequestsAreCapped(t *testing.T) {
	c := startTestCloud(t, func(cfg *cloud.Config) {
		cfg.GatewayLimits = coapgateway.Limits{MaxPendingPerDevice: 2}
	})
	var mu sync.Mutex
	var held []mux.ResponseWriter
	cc, err := dialRaw(t, c.coapAddr(), nil, func(w mux.ResponseWriter, r *mux.Message) {
		if p, _ := r.Options().Path(); p == "/slow" {
			mu.Lock()
			held = append(held, w) // never answered
			mu.Unlock()
			return
		}
		_ = w.SetResponse(codes.Content, message.TextPlain, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	const di = "0b7e3c52-8f0e-4b65-a1d4-5c2e9f7a3b21"
	c.onboardRaw(cc, di)

	slow := func() (*commands.Response, error) {
		return do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/slow", TimeoutMillis: 1500})
	}
	type result struct {
		resp *commands.Response
		err  error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() { r, err := slow(); results <- result{r, err} }()
	}
	waitFor(t, "two requests held by the device", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) == 2
	})
	if resp, err := slow(); !errors.Is(err, commands.ErrBusy) || resp.Code != "5.03" {
		t.Fatalf("third request: %+v %v, want ErrBusy", resp, err)
	}
	// The connection's reader is not blocked by the two waiting requests.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := cc.Ping(ctx); err != nil {
		t.Fatalf("ping while requests wait: %v", err)
	}
	for range 2 {
		r := <-results
		if !errors.Is(r.err, commands.ErrTimeout) || r.resp == nil || r.resp.Code != "5.04" {
			t.Fatalf("slow request: %+v %v, want device_timeout", r.resp, r.err)
		}
	}
	// Slots are free again.
	if resp, err := do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/fast"}); err != nil || resp.Code != "2.05" {
		t.Fatalf("after timeouts: %+v %v", resp, err)
	}
}
