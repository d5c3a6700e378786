package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

const adminPassword = "correct horse battery staple"

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startCloud runs the whole cloud in-process. Addresses "127.0.0.1:0" pick
// random ports; a restart passes the previous ones to keep URLs stable.
func startCloud(t *testing.T, dataDir, httpAddr, coapAddr, coapsAddr string) *cloud.Cloud {
	t.Helper()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir:       dataDir,
		HTTPAddr:      httpAddr,
		CoAPAddr:      coapAddr,
		CoAPSAddr:     coapsAddr,
		AdminPassword: adminPassword,
		Logger:        testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type client struct {
	t     *testing.T
	base  string
	token string
}

func (c *client) do(method, path string, body io.Reader, contentType string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func (c *client) getJSON(path string, want int, out any) {
	c.t.Helper()
	resp, body := c.do(http.MethodGet, path, nil, "")
	if resp.StatusCode != want {
		c.t.Fatalf("GET %s: status %d, want %d: %s", path, resp.StatusCode, want, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			c.t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
}

// passwordToken gets a token for admin through the built-in CLI client.
func passwordToken(t *testing.T, base, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {adminPassword}}
	if scope != "" {
		form.Set("scope", scope)
	}
	c := &client{t: t, base: base}
	resp, body := c.do(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token answer %s", body)
	}
	return tok.AccessToken
}

type onboardingCode struct {
	APN       string `json:"apn"`
	CIS       string `json:"cis"`
	CISSecure string `json:"cisSecure"`
	SID       string `json:"sid"`
	AT        string `json:"at"`
	CloudCA   string `json:"cloudCA"`
	ExpiresAt string `json:"expiresAt"`
}

type c2cDevice struct {
	Device struct {
		DI string   `json:"di"`
		N  string   `json:"n"`
		RT []string `json:"rt"`
	} `json:"device"`
	Status string `json:"status"`
	Links  []struct {
		Href string   `json:"href"`
		RT   []string `json:"rt"`
	} `json:"links"`
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func onboard(t *testing.T, api *client) onboardingCode {
	t.Helper()
	resp, body := api.do(http.MethodPost, "/api/v1/onboarding-codes", nil, "")
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("onboarding code: %d %s", resp.StatusCode, body)
	}
	var code onboardingCode
	if err := json.Unmarshal(body, &code); err != nil {
		t.Fatal(err)
	}
	// cisSecure is empty when the cloud runs no coaps+tcp listener.
	if code.AT == "" || !strings.HasPrefix(code.CIS, "coap+tcp://") || (code.CISSecure != "" && !strings.HasPrefix(code.CISSecure, "coaps+tcp://")) ||
		code.SID == "" || !strings.Contains(code.CloudCA, "BEGIN CERTIFICATE") || code.ExpiresAt == "" {
		t.Fatalf("onboarding code answer incomplete: %s", body)
	}
	return code
}

func runDevice(t *testing.T, code onboardingCode, di string) (*devicesim.Device, context.CancelFunc) {
	t.Helper()
	dev, err := devicesim.New(devicesim.Config{CIS: code.CIS, APN: code.APN, SID: code.SID, AccessToken: code.AT, DeviceID: di, Name: "kitchen light", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dev.Run(ctx)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	select {
	case <-dev.Ready():
	case <-done:
		t.Fatal("device stopped before it was onboarded")
	case <-time.After(20 * time.Second):
		t.Fatal("device not onboarded after 20s")
	}
	return dev, stop
}

func lightOf(t *testing.T, api *client, di string) map[string]any {
	t.Helper()
	var light map[string]any
	api.getJSON("/api/v1/devices/"+di+"/light/1", http.StatusOK, &light)
	return light
}

func TestDeviceOnboardsWithPortalCode(t *testing.T) {
	c := startCloud(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
	defer c.Close()
	base := "http://" + c.HTTPAddr()

	var disco struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
		JWKSURI       string `json:"jwks_uri"`
	}
	(&client{t: t, base: base}).getJSON("/.well-known/openid-configuration", http.StatusOK, &disco)
	if disco.Issuer != base || disco.TokenEndpoint != base+"/oauth/token" || disco.JWKSURI == "" {
		t.Fatalf("discovery: %+v", disco)
	}

	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	code := onboard(t, api)
	if !strings.HasPrefix(code.CISSecure, "coaps+tcp://127.0.0.1:") || strings.HasSuffix(code.CISSecure, ":") {
		t.Fatalf("cisSecure %q", code.CISSecure)
	}
	const di = "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8"
	dev, _ := runDevice(t, code, di)

	var devices []c2cDevice
	waitFor(t, "device listed online with its name", 20*time.Second, func() bool {
		api.getJSON("/api/v1/devices", http.StatusOK, &devices)
		return len(devices) == 1 && devices[0].Status == "online" && devices[0].Device.N == "kitchen light"
	})
	d := devices[0]
	if d.Device.DI != di {
		t.Fatalf("device id %q", d.Device.DI)
	}
	hrefs := map[string]bool{}
	for _, l := range d.Links {
		hrefs[l.Href] = true
	}
	for _, h := range []string{"/oic/d", "/oic/p", "/light/1"} {
		if !hrefs["/"+di+h] {
			t.Errorf("link %s missing in %+v", h, d.Links)
		}
	}

	waitFor(t, "light content in the twin", 20*time.Second, func() bool {
		resp, _ := api.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, "")
		return resp.StatusCode == http.StatusOK
	})
	light := lightOf(t, api, di)
	if light["state"] != false || light["power"] != float64(0) {
		t.Fatalf("light content %v", light)
	}

	// The gateway observes /light/1: a change on the device reaches the twin.
	dev.SetLight(true, 42)
	waitFor(t, "observed change in the twin", 20*time.Second, func() bool {
		l := lightOf(t, api, di)
		return l["state"] == true && l["power"] == float64(42)
	})

	// Bearer rules: no token → 401 with WWW-Authenticate; missing scope → 403.
	anon := &client{t: t, base: base}
	resp, _ := anon.do(http.MethodGet, "/api/v1/devices", nil, "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	bad := &client{t: t, base: base, token: "not-a-jwt"}
	if resp, _ := bad.do(http.MethodGet, "/api/v1/devices", nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}
	narrow := &client{t: t, base: base, token: passwordToken(t, base, "r:resources:*")}
	if resp, _ := narrow.do(http.MethodGet, "/api/v1/devices", nil, ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("missing scope: %d", resp.StatusCode)
	}
	if resp, _ := narrow.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("resource read with r:resources:*: %d", resp.StatusCode)
	}

	// The code was single-use: a second device cannot sign up with it.
	other, err := devicesim.New(devicesim.Config{CIS: code.CIS, AccessToken: code.AT, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := other.Run(ctx); err == nil {
		t.Fatal("second device signed up with a used code")
	}
}

func TestDeviceStaysRegisteredAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	c := startCloud(t, dir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
	base := "http://" + c.HTTPAddr()
	httpAddr, coapAddr, coapsAddr := c.HTTPAddr(), c.CoAPAddrs()[0].String(), c.CoAPAddrs()[1].String()
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	const di = "2f0e1a5c-7d3b-4e8a-9c61-0b5d4f3e2a19"
	dev, _ := runDevice(t, onboard(t, api), di)
	dev.SetLight(true, 7)
	waitFor(t, "twin has the change", 20*time.Second, func() bool {
		resp, body := api.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, "")
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"power":7`)
	})
	c.Close()

	c2 := startCloud(t, dir, httpAddr, coapAddr, coapsAddr)
	defer c2.Close()
	// The token from before the restart still verifies: keys are durable.
	var devices []c2cDevice
	api.getJSON("/api/v1/devices", http.StatusOK, &devices)
	if len(devices) != 1 || devices[0].Device.DI != di || len(devices[0].Links) != 3 {
		t.Fatalf("after restart: %+v", devices)
	}
	if l := lightOf(t, api, di); l["power"] != float64(7) {
		t.Fatalf("twin after restart: %v", l)
	}
	// The device reconnects on its own, only signs in, and is observed again.
	waitFor(t, "device back online", 40*time.Second, func() bool {
		api.getJSON("/api/v1/devices/"+di, http.StatusOK, &devices[0])
		return devices[0].Status == "online"
	})
	dev.SetLight(false, 3)
	waitFor(t, "change after reconnect reaches the twin", 20*time.Second, func() bool {
		l := lightOf(t, api, di)
		return l["state"] == false && l["power"] == float64(3)
	})
}

// unusedAddr returns a loopback address that nothing listens on now, for a
// server that must come back on the same address after a restart.
func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// readyz is the status of base's /readyz, 0 when it does not answer.
func readyz(base string) int {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
