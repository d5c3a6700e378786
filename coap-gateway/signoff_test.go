package coapgateway_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

func deleteAccount(t *testing.T, cc *client.Conn, query ...string) codes.Code {
	t.Helper()
	opts := ocfOpts()
	for _, q := range query {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Delete(ctx, ocf.PathAccount, opts...)
	if err != nil {
		t.Fatalf("DELETE %s: %v", ocf.PathAccount, err)
	}
	return resp.Code()
}

func (c *testCloud) waitGone(di string) {
	c.t.Helper()
	waitFor(c.t, "device gone from the C2C API", 10*time.Second, func() bool {
		status, _ := c.deviceStatus(di)
		return status == http.StatusNotFound
	})
	if _, err := do(c.t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"}); !errors.Is(err, commands.ErrNoGateway) {
		c.t.Fatalf("command after sign-off: %v, want ErrNoGateway", err)
	}
}

func TestSignOffFromTheSessionRemovesTheDevice(t *testing.T) {
	c := startTestCloud(t, nil)
	cc, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const di = "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a"
	c.onboardRaw(cc, di)
	waitFor(t, "device online in the C2C API", 10*time.Second, func() bool {
		_, st := c.deviceStatus(di)
		return st == "online"
	})
	if resp, err := do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"}); err != nil || resp.Code != "4.04" {
		t.Fatalf("command before sign-off: %+v %v", resp, err)
	}
	if code := deleteAccount(t, cc); code != codes.Deleted {
		t.Fatalf("sign-off: %v, want 2.02", code)
	}
	waitClosed(t, cc, 5*time.Second, "after sign-off")
	c.waitGone(di)
	// It stays gone: nothing the old session queued registers it again.
	time.Sleep(300 * time.Millisecond)
	if status, _ := c.deviceStatus(di); status != http.StatusNotFound {
		t.Fatalf("device back after sign-off: %d", status)
	}
}

func TestSignOffWithCredentialsInTheQueryEndsTheDevicesSession(t *testing.T) {
	c := startTestCloud(t, nil)
	const di = "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9"
	devConn, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := c.onboardRaw(devConn, di)

	other, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := deleteAccount(t, other, "di="+di, "uid="+dev.uid, "accesstoken=not-a-token"); code != codes.Unauthorized {
		t.Fatalf("sign-off with a bad token: %v, want 4.01", code)
	}
	if code := deleteAccount(t, other, "di="+di, "uid="+dev.uid, "accesstoken="+dev.at); code != codes.Deleted {
		t.Fatalf("sign-off: %v, want 2.02", code)
	}
	waitClosed(t, devConn, 5*time.Second, "the device's own connection after sign-off elsewhere")
	c.waitGone(di)
}

func TestCloudSideSignOffCommandEndsTheSession(t *testing.T) {
	c := startTestCloud(t, nil)
	cc, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const di = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
	c.onboardRaw(cc, di)
	resp, err := do(t, c, di, &commands.Request{Method: commands.MethodSignOff})
	if err != nil || resp.Code != "2.02" {
		t.Fatalf("sign-off command: %+v %v", resp, err)
	}
	waitClosed(t, cc, 5*time.Second, "after the sign-off command")
	waitFor(t, "no gateway for the device", 5*time.Second, func() bool {
		_, err := do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"})
		return errors.Is(err, commands.ErrNoGateway)
	})
}
