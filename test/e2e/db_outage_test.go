package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// databaseOutage is how long the database stays away: long enough for the
// readiness probe, the driver's server selection and the gateway's backend
// timeout to fire at least once while it lasts.
const databaseOutage = 30 * time.Second

// TestDatabaseOutageIsSurvivedWithoutRestart stops the database under a
// running cloud with connected devices for databaseOutage and starts it
// again on the same files. Every outageCheckEvery meanwhile: the process
// answers, readiness is false, reads are served from memory, what needs the
// database (sign-in to the API, onboarding codes) answers 503 with
// Retry-After, and devices get 5.03 (retry) for what needs the database and
// succeed at what does not, never 4.01 (give up). Afterwards readiness is
// true again, the same devices succeed on their own retries, and what
// devices did during the outage has reached the database, without
// restarting anything.
func TestDatabaseOutageIsSurvivedWithoutRestart(t *testing.T) {
	t.Parallel()
	dbDir := t.TempDir()
	addr := unusedAddr(t)
	startDB := func() *platform.Ferret {
		f, err := platform.StartFerretOn(addr, dbDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	db := startDB()
	defer func() { db.Shutdown() }()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		MongoURI: db.URI(), AdminPassword: adminPassword, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	passwordForm := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {adminPassword}}
	grant := func() *http.Response {
		resp, err := http.Post(base+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(passwordForm.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	const di = "d8b1e2f3-0a4c-4b5d-9e6f-7a8b9c0d1e2f"
	dev, _ := runDevice(t, onboard(t, api), di)
	waitFor(t, "light content in the twin", 20*time.Second, func() bool {
		resp, _ := api.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, "")
		return resp.StatusCode == http.StatusOK
	})
	requests, newcomer := outageDevices(t, api, c.CoAPAddrs()[0].String(), "d8b1e2f3-0a4c-4b5d-9e6f-00000000000")
	// Sign-up and refresh need authz's database: 5.03, so the device
	// retries. Sign-in verifies the token locally and publish writes an
	// event to JetStream, so both keep working.
	duringOutage := map[string]codes.Code{
		"sign-up": codes.ServiceUnavailable,
		"sign-in": codes.Changed,
		"refresh": codes.ServiceUnavailable,
		"publish": codes.Changed,
	}

	db.Shutdown() // the database goes away
	down := time.Now()
	waitFor(t, "readiness false", 15*time.Second, func() bool { return readyz(base) == http.StatusServiceUnavailable })
	t.Logf("readiness false %v after the database stopped", time.Since(down).Round(10*time.Millisecond))
	dev.SetLight(true, 55) // observed during the outage
	// What needs the database waits for the driver's server selection
	// timeout (5 s), longer than a device waits before resending
	// (deviceRetryPeriod): it gets its 5.03 late, but it gets it.
	devices := deviceChecks(requests, duringOutage, gatewayBackendTimeout)
	checks := append([]outageCheck{
		apiCheck(api, http.MethodGet, "/api/v1/devices", "", time.Second, http.StatusOK, false), // from memory
		// What needs the database answers 503 with Retry-After, after the
		// driver's server selection timeout.
		httpCheck("password grant", gatewayBackendTimeout, http.StatusServiceUnavailable, true, func() (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(passwordForm.Encode()))
			if err == nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			return req, err
		}),
		apiCheck(api, http.MethodPost, "/api/v1/onboarding-codes", "", gatewayBackendTimeout, http.StatusServiceUnavailable, true),
	}, devices...)
	holdOutage(t, base, down, databaseOutage, checks...)

	db = startDB() // and comes back on the same files
	end := time.Now()
	recovery(t, base, end, time.Minute, requests)
	waitFor(t, "sign-in to the API works again", 30*time.Second, func() bool { return grant().StatusCode == http.StatusOK })
	t.Logf("after the outage: password grant works %v after it ended", time.Since(end).Round(10*time.Millisecond))
	newcomer.mustOnline()
	// The event of a change observed during the outage was acknowledged
	// and is not lost: it reaches the twin once the database is back.
	waitFor(t, "the change observed during the outage in the twin", 20*time.Second, func() bool {
		return lightOf(t, api, di)["power"] == float64(55)
	})
	waitFor(t, "live update through the device again", 30*time.Second, func() bool {
		resp, _ := api.do(http.MethodPost, "/api/v1/devices/"+di+"/light/1", strings.NewReader(`{"power":77}`), "application/json")
		return resp.StatusCode == http.StatusOK
	})
	if _, pw, _ := dev.Light(); pw != 77 {
		t.Fatalf("device power %d", pw)
	}
}
