package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// TestServicesRunSeparately runs the gateway apart from authz, the registry
// and the C2C API, as the Helm chart does: the two halves share only NATS,
// MongoDB and HTTP. A device onboards through the separate gateway and is
// read and controlled through the API of the other half.
func TestServicesRunSeparately(t *testing.T) {
	natsURL := platform.TestNATS(t)
	ferret, err := platform.StartFerret(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ferret.Shutdown()
	dir := t.TempDir() // shared only for the dev certificates
	api, err := cloud.New(context.Background(), cloud.Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSURL: natsURL, MongoURI: ferret.URI(),
		Services:      []string{cloud.ServiceAuthz, cloud.ServiceRegistry, cloud.ServiceC2C},
		AdminPassword: adminPassword, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	base := "http://" + api.HTTPAddr()
	gw, err := cloud.New(context.Background(), cloud.Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		NATSURL: natsURL, MongoURI: ferret.URI(), PublicURL: base, AuthzURL: base,
		Services: []string{cloud.ServiceCoAPGateway}, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if ok, st := gw.Ready(); !ok {
		t.Fatalf("gateway-only process not ready: %v", st)
	}

	cli := &client{t: t, base: base, token: passwordToken(t, base, "")}
	code := onboard(t, cli)
	code.CIS = "coap+tcp://" + gw.CoAPAddrs()[0].String() // the gateway process, not the API's
	const di = "5a0c3e1f-8b2d-4c6e-9f1a-3d5b7c9e1f20"
	dev, _ := runDevice(t, code, di)

	waitFor(t, "device online with its links through the API half", 20*time.Second, func() bool {
		resp, body := cli.do(http.MethodGet, "/api/v1/devices/"+di, nil, "")
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"status":"online"`) && strings.Contains(string(body), "/light/1")
	})
	resp, body := cli.do(http.MethodPost, "/api/v1/devices/"+di+"/light/1", strings.NewReader(`{"state":true,"power":21}`), "application/json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("update through the other process: %d %s", resp.StatusCode, body)
	}
	if st, pw, _ := dev.Light(); !st || pw != 21 {
		t.Fatalf("device light %v %d", st, pw)
	}
	waitFor(t, "twin updated", 20*time.Second, func() bool {
		return lightOf(t, cli, di)["power"] == float64(21)
	})
}

// TestDeviceTriesTheNextGateway gives the device two gateway addresses, the
// first of them dead: the device moves on to the second and onboards.
func TestDeviceTriesTheNextGateway(t *testing.T) {
	c := startCloud(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "-")
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	cli := &client{t: t, base: base, token: passwordToken(t, base, "")}
	code := onboard(t, cli)
	code.CIS = "coap+tcp://" + unusedAddr(t) + "," + code.CIS // nothing listens on the first
	runDevice(t, code, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
}
