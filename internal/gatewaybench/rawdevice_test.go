package gatewaybench

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

// The storm's raw device signs in through a real gateway, answers the
// gateway's requests and pings, and notices when the gateway goes away.
func TestRawDeviceSignsInAndStaysUntilTheGatewayCloses(t *testing.T) {
	ctx := context.Background()
	be, err := startBackend(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer be.close()
	g, nc, err := newGateway(ctx, be, "127.0.0.1:0", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	di := devicesim.NewDeviceID()
	tok, err := be.mint(di)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialRawDevice(ctx, g.Addrs()[0].String(), netip.Addr{}, di, benchUser, "not-"+tok); err == nil {
		t.Fatal("sign-in with a bad token succeeded")
	}
	dev, err := dialRawDevice(ctx, g.Addrs()[0].String(), netip.Addr{}, di, benchUser, tok)
	if err != nil {
		t.Fatal(err)
	}
	ping, err := encodeFrame(message.Message{Code: codes.Ping, Token: message.Token("p")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.conn.Write(ping); err != nil {
		t.Fatal(err)
	}
	_ = dev.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := dev.read(); err != nil || m.Code != codes.Pong {
		t.Fatalf("ping: %v %v", m.Code, err)
	}
	_ = dev.conn.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() { dev.serve(); close(done) }()
	g.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the device did not notice the gateway closing")
	}
}
