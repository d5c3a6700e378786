package e2e

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// natsOutage is how long NATS stays away: long enough that every timeout on
// the way (NATS reconnects, JetStream requests, the gateway's backend
// timeout) fires at least once while it lasts.
const natsOutage = 30 * time.Second

// TestNATSOutageIsSurvivedWithoutRestart stops the NATS server under a
// running cloud with connected devices for natsOutage, then starts it again
// on the same store. Every outageCheckEvery meanwhile: the process answers,
// readiness is false, live requests answer 503 with Retry-After, twin reads
// are served from memory, and devices that sign up, sign in, refresh or
// publish get 5.03 (retry) and never 4.01 (give up). Afterwards readiness is
// true again, the same devices succeed on their own retries, and the device
// is controllable again, all without restarting anything.
func TestNATSOutageIsSurvivedWithoutRestart(t *testing.T) {
	t.Parallel()
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

	coapAddr := c.CoAPAddrs()[0].String()
	requests, newcomer := outageDevices(t, api, coapAddr, "7e57a9e1-0b1c-4d2e-8f3a-00000000000")
	// One more device tries to sign in during the outage and then stays
	// away: what it was refused must not take effect after the outage.
	const awayDI = "7e57a9e1-0b1c-4d2e-8f3a-000000000005"
	away := newCoAPDevice(t, coapAddr, awayDI, onboard(t, api).AT)
	if code, err := away.signUp(); err != nil || code != codes.Changed {
		t.Fatalf("sign-up before the outage: %v %v", code, err)
	}
	// Sign-up, sign-in and publish write events to JetStream: 5.03, so the
	// device retries. A refresh needs only authz and its database, so it
	// keeps working.
	duringOutage := map[string]codes.Code{
		"sign-up":            codes.ServiceUnavailable,
		"sign-in":            codes.ServiceUnavailable,
		"refresh":            codes.Changed,
		"publish":            codes.ServiceUnavailable,
		"sign-in, then away": codes.ServiceUnavailable,
	}

	ns.Shutdown() // NATS goes away
	down := time.Now()
	waitFor(t, "readiness false", 10*time.Second, func() bool { return readyz(base) == http.StatusServiceUnavailable })
	t.Logf("readiness false %v after NATS stopped", time.Since(down).Round(10*time.Millisecond))
	// The gateway knows it has lost NATS: it answers at once, before
	// the device would resend.
	devices := deviceChecks(append(requests, deviceRequest{"sign-in, then away", away.reconnectAndSignIn}), duringOutage, deviceRetryPeriod)
	checks := append([]outageCheck{
		// Live requests need NATS: 503 with Retry-After, at once.
		apiCheck(api, http.MethodPost, light, `{"power":1}`, time.Second, http.StatusServiceUnavailable, true),
		apiCheck(api, http.MethodGet, light+"?twin=false", "", time.Second, http.StatusServiceUnavailable, true),
		// Twin reads are served from memory; onboarding codes live in the
		// database.
		apiCheck(api, http.MethodGet, light, "", time.Second, http.StatusOK, false),
		apiCheck(api, http.MethodPost, "/api/v1/onboarding-codes", "", time.Second, http.StatusCreated, false),
	}, devices...)
	holdOutage(t, base, down, natsOutage, checks...)

	ns = startNATS() // and comes back on the same store
	end := time.Now()
	recovery(t, base, end, time.Minute, requests)
	newcomer.mustOnline()
	var lastLive string
	waitFor(t, "live update through the device again", 30*time.Second, func() bool {
		resp, body := api.do(http.MethodPost, light, strings.NewReader(`{"power":77}`), "application/json")
		lastLive = resp.Status + " " + string(body)
		if resp.StatusCode != http.StatusOK {
			t.Logf("live update after the outage: %s", lastLive)
		}
		return resp.StatusCode == http.StatusOK
	})
	t.Logf("after the outage: live update through the simulated device %v after it ended", time.Since(end).Round(10*time.Millisecond))
	if _, pw, _ := dev.Light(); pw != 77 {
		t.Fatalf("device power %d", pw)
	}
	// Events published after the outage are stored after anything the
	// gateway held back during it, so by now a refused sign-in that took
	// effect anyway would show.
	var awayDevice c2cDevice
	api.getJSON("/api/v1/devices/"+awayDI, http.StatusOK, &awayDevice)
	if awayDevice.Status != "offline" {
		t.Errorf("a device refused sign-in during the outage is %q after it", awayDevice.Status)
	}
	waitFor(t, "observed change reaches the twin after the outage", 20*time.Second, func() bool {
		return lightOf(t, api, di)["power"] == float64(77)
	})
}
