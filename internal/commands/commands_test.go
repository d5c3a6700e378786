package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// A gateway stand-in answers on the device subject the way coap-gateway
// does; the client maps its answers to sentinel errors.
func TestClientMapsGatewayAnswersToErrors(t *testing.T) {
	nc, err := nats.Connect(platform.TestNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const di = "5a0c6c1e-2a4b-4c3e-8f7d-1e2d3c4b5a69"
	var got commands.Request
	sub, err := nc.Subscribe(commands.Subject(di), func(m *nats.Msg) {
		_ = json.Unmarshal(m.Data, &got)
		resp := commands.Response{Code: "2.05", ContentType: "application/vnd.ocf+cbor", Content: []byte{0xa0}}
		switch got.Href {
		case "/timeout":
			resp = commands.Response{Code: "5.04", Error: commands.ErrCodeTimeout}
		case "/offline":
			resp = commands.Response{Code: "5.03", Error: commands.ErrCodeOffline}
		case "/busy":
			resp = commands.Response{Code: "5.03", Error: commands.ErrCodeBusy}
		case "/bad":
			resp = commands.Response{Code: "4.00", Error: commands.ErrCodeBadRequest}
		case "/silent":
			return
		}
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	c := commands.NewClient(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	resp, err := c.Do(ctx, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"})
	if err != nil || resp.Code != "2.05" {
		t.Fatalf("GET: %+v %v", resp, err)
	}
	if got.TimeoutMillis <= 0 || got.TimeoutMillis > 5000 {
		t.Errorf("timeout passed to the gateway: %d ms, want the context's deadline", got.TimeoutMillis)
	}
	for href, want := range map[string]error{"/timeout": commands.ErrTimeout, "/offline": commands.ErrNoGateway, "/busy": commands.ErrBusy, "/bad": commands.ErrBadRequest} {
		if _, err := c.Do(ctx, di, &commands.Request{Method: commands.MethodGet, Href: href}); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", href, err, want)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if _, err := c.Do(short, di, &commands.Request{Method: commands.MethodGet, Href: "/silent"}); !errors.Is(err, commands.ErrTimeout) {
		t.Errorf("silent gateway: %v, want ErrTimeout", err)
	}
	if _, err := c.Do(ctx, "6b1d7d2f-3b5c-4d4f-9a8e-2f3e4d5c6b7a", &commands.Request{Method: commands.MethodGet, Href: "/x"}); !errors.Is(err, commands.ErrNoGateway) {
		t.Errorf("no gateway: %v, want ErrNoGateway", err)
	}
}
