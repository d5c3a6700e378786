package coapgateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

func withLimits(l coapgateway.Limits) func(*cloud.Config) {
	return func(cfg *cloud.Config) { cfg.GatewayLimits = l }
}

// admitted reports whether the gateway kept a fresh TCP connection: an
// admitted one receives the gateway's CSM, a refused one is closed at once.
func admitted(t *testing.T, conn net.Conn) bool {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := conn.Read(make([]byte, 64))
	if n > 0 {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
		return false
	}
	t.Fatalf("neither data nor close within 3s: %v", err)
	return false
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestConnectionsBeyondTheLimitAreRefused(t *testing.T) {
	c := startTestCloud(t, withLimits(coapgateway.Limits{MaxConnections: 2, ConnRatePerIP: -1}))
	first, second := dialTCP(t, c.coapAddr()), dialTCP(t, c.coapAddr())
	if !admitted(t, first) || !admitted(t, second) {
		t.Fatal("connections within the limit refused")
	}
	if admitted(t, dialTCP(t, c.coapAddr())) {
		t.Fatal("third connection admitted with MaxConnections 2")
	}
	// A closed connection frees its slot.
	_ = first.Close()
	waitFor(t, "a slot after a close", 5*time.Second, func() bool {
		return admitted(t, dialTCP(t, c.coapAddr()))
	})
}

func TestConnectionRateIsLimitedPerAddress(t *testing.T) {
	c := startTestCloud(t, withLimits(coapgateway.Limits{ConnRatePerIP: 0.5, ConnBurstPerIP: 2}))
	for i := range 2 {
		if !admitted(t, dialTCP(t, c.coapAddr())) {
			t.Fatalf("connection %d within the burst refused", i+1)
		}
	}
	if admitted(t, dialTCP(t, c.coapAddr())) {
		t.Fatal("connection beyond the burst admitted")
	}
	// The TLS listener shares the budget of the address.
	if admitted(t, dialTCP(t, c.coapsAddr())) {
		t.Fatal("TLS connection beyond the burst admitted")
	}
}

func TestOversizedMessageClosesTheConnection(t *testing.T) {
	c := startTestCloud(t, withLimits(coapgateway.Limits{MaxMessageSize: 2048}))
	cc, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := postOn(t, cc, ocf.PathAccount, map[string]string{"di": "x", "pad": string(bytes.Repeat([]byte("a"), 1000))}); code != codes.BadRequest {
		t.Fatalf("message within the limit: %v", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte{0x61}, 4096)
	if _, err := cc.Post(ctx, ocf.PathAccount, ocf.ContentFormatCBOR, bytes.NewReader(big), ocfOpts()...); err == nil {
		t.Fatal("oversized message answered")
	}
	waitClosed(t, cc, 5*time.Second, "after an oversized message")
}

func TestSilentConnectionIsDroppedAndTheDeviceGoesOffline(t *testing.T) {
	c := startTestCloud(t, withLimits(coapgateway.Limits{InactivityTimeout: 1500 * time.Millisecond}))
	silent, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const di = "4c3b2a19-0f8e-4d6c-9b5a-493827161504"
	c.onboardRaw(silent, di)
	waitFor(t, "device online", 10*time.Second, func() bool { _, st := c.deviceStatus(di); return st == "online" })

	// A device that pings more often than the limit stays connected.
	pinging, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(400 * time.Millisecond):
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = pinging.Ping(ctx)
				cancel()
			}
		}
	}()

	waitClosed(t, silent, 6*time.Second, "silent beyond the inactivity limit")
	waitFor(t, "device offline in the C2C API", 10*time.Second, func() bool { _, st := c.deviceStatus(di); return st == "offline" })
	select {
	case <-pinging.Done():
		t.Fatal("pinging connection dropped")
	default:
	}
}

// Before sign-in a connection may send at most MaxMessageSizeBeforeSignIn;
// a signed-in device may send up to MaxMessageSize.
func TestMessagesBeforeSignInAreSmaller(t *testing.T) {
	const before, after = 4 << 10, 32 << 10
	c := startTestCloud(t, withLimits(coapgateway.Limits{ConnRatePerIP: -1, MaxMessageSize: after, MaxMessageSizeBeforeSignIn: before}))
	small := dialPeer(t, c.coapAddr(), nil)
	if m := small.request(small.sized(before)); m.Code != codes.BadRequest {
		t.Fatalf("a garbage sign-up of the limit before sign-in: %v %q, want 4.00", m.Code, m.Payload)
	}
	big := dialPeer(t, c.coapAddr(), nil)
	big.send(big.sized(before + 1))
	big.expectClosed(t, 10*time.Second)
	big.expectNoAnswers(t)

	dev := dialPeer(t, c.coapAddr(), nil)
	dev.onboard(t, c, "6b1e2d3c-4b5a-4697-8a8b-9c0d1e2f3a4c", nil)
	if m := dev.request(dev.sized(after)); m.Code != codes.BadRequest {
		t.Fatalf("a frame of MaxMessageSize after sign-in: %v %q, want 4.00 (garbage sign-up)", m.Code, m.Payload)
	}
}
