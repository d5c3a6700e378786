package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

// TestOffboardedDeviceCannotComeBack offboards a connected device through the
// C2C API. The gateway closes its connection; the device reconnects with the
// tokens it holds, which authz has revoked, so it cannot sign in or refresh
// and gives up: it would need a new onboarding code.
func TestOffboardedDeviceCannotComeBack(t *testing.T) {
	c := startCloud(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "-")
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	code := onboard(t, api)
	const di = "0ff0b0a2-d000-4e00-8a00-000000000001"
	dev, err := devicesim.New(devicesim.Config{CIS: code.CIS, AccessToken: code.AT, DeviceID: di, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dev.Run(ctx) }()
	<-dev.Ready()
	waitFor(t, "device listed", 20*time.Second, func() bool {
		resp, _ := api.do(http.MethodGet, "/api/v1/devices/"+di, nil, "")
		return resp.StatusCode == http.StatusOK
	})

	if resp, body := api.do(http.MethodDelete, "/api/v1/devices/"+di, nil, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("offboard: %d %s", resp.StatusCode, body)
	}
	select {
	case err := <-done:
		if !errors.Is(err, devicesim.ErrUnauthorized) {
			t.Fatalf("device stopped with %v, want ErrUnauthorized", err)
		}
	case <-ctx.Done():
		t.Fatal("the offboarded device kept going: its tokens still work")
	}
	if resp, _ := api.do(http.MethodGet, "/api/v1/devices/"+di, nil, ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("offboarded device is back: %d", resp.StatusCode)
	}
}
