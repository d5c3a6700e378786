package e2e

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// TestNATSOutageIsSurvivedWithoutRestart stops the NATS server under a
// running cloud with a connected device, then starts it again on the same
// store: readiness goes false and true again, live requests answer 503 with
// Retry-After meanwhile, nothing crashes, and the device is controllable
// again afterwards without restarting anything.
func TestNATSOutageIsSurvivedWithoutRestart(t *testing.T) {
	store := t.TempDir()
	_, portText, _ := net.SplitHostPort(unusedAddr(t))
	port, _ := strconv.Atoi(portText)
	startNATS := func() *platform.NATS {
		n, err := platform.StartNATS(platform.NATSOptions{StoreDir: store, Port: port})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ns := startNATS()
	defer func() { ns.Shutdown() }()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		NATSURL: ns.URL(), AdminPassword: adminPassword, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	const di = "7e57a9e1-0b1c-4d2e-8f3a-4b5c6d7e8f90"
	dev, _ := runDevice(t, onboard(t, api), di)
	light := "/api/v1/devices/" + di + "/light/1"
	waitFor(t, "device online with its twin", 20*time.Second, func() bool {
		resp, body := api.do(http.MethodGet, "/api/v1/devices/"+di, nil, "")
		twin, _ := api.do(http.MethodGet, light, nil, "")
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"status":"online"`) && twin.StatusCode == http.StatusOK
	})
	ns.Shutdown() // NATS goes away
	waitFor(t, "readiness false", 10*time.Second, func() bool { return readyz(base) == http.StatusServiceUnavailable })
	resp, _ := api.do(http.MethodPost, light, strings.NewReader(`{"power":1}`), "application/json")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("live request during the outage: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Reads of the twin keep working from memory.
	if resp, _ := api.do(http.MethodGet, light, nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("twin read during the outage: %d", resp.StatusCode)
	}

	ns = startNATS() // and comes back on the same store
	waitFor(t, "readiness true again", 20*time.Second, func() bool { return readyz(base) == http.StatusOK })
	waitFor(t, "live update through the device again", 30*time.Second, func() bool {
		resp, _ := api.do(http.MethodPost, light, strings.NewReader(`{"power":77}`), "application/json")
		return resp.StatusCode == http.StatusOK
	})
	if _, pw, _ := dev.Light(); pw != 77 {
		t.Fatalf("device power %d", pw)
	}
	waitFor(t, "observed change reaches the twin after the outage", 20*time.Second, func() bool {
		return lightOf(t, api, di)["power"] == float64(77)
	})
}
