package coapgateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

const testAdminPassword = "admin-secret"

// testCloud is a whole cloud in-process on random ports, with its NATS
// reachable so tests can send commands like c2c-api does.
type testCloud struct {
	*cloud.Cloud
	t      testing.TB
	base   string
	token  string
	nc     *nats.Conn
	client *commands.Client
}

func startTestCloud(t testing.TB, mod func(*cloud.Config)) *testCloud {
	t.Helper()
	natsURL := platform.TestNATS(t)
	cfg := cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "127.0.0.1:0",
		NATSURL: natsURL, AdminPassword: testAdminPassword, Logger: quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := cloud.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tc := &testCloud{Cloud: c, t: t, base: "http://" + c.HTTPAddr(), nc: nc, client: commands.NewClient(nc)}
	tc.token = tc.passwordToken()
	return tc
}

func (c *testCloud) coapAddr() string { return c.CoAPAddrs()[0].String() }

func (c *testCloud) coapsAddr() string { return c.CoAPAddrs()[1].String() }

func (c *testCloud) http(method, path string, body io.Reader, contentType string) (int, []byte) {
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
	return resp.StatusCode, data
}

func (c *testCloud) passwordToken() string {
	c.t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {testAdminPassword}}
	status, body := c.http(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
	if status != http.StatusOK {
		c.t.Fatalf("token: %d %s", status, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		c.t.Fatalf("token answer %s", body)
	}
	return tok.AccessToken
}

type onboardingCode struct {
	APN       string `json:"apn"`
	CIS       string `json:"cis"`
	CISSecure string `json:"cisSecure"`
	SID       string `json:"sid"`
	AT        string `json:"at"`
}

func (c *testCloud) code() onboardingCode {
	c.t.Helper()
	status, body := c.http(http.MethodPost, "/api/v1/onboarding-codes", nil, "")
	if status != http.StatusCreated && status != http.StatusOK {
		c.t.Fatalf("onboarding code: %d %s", status, body)
	}
	var code onboardingCode
	if err := json.Unmarshal(body, &code); err != nil || code.AT == "" {
		c.t.Fatalf("onboarding code %s: %v", body, err)
	}
	return code
}

// deviceStatus is the C2C view: 404 or the status string.
func (c *testCloud) deviceStatus(di string) (int, string) {
	c.t.Helper()
	status, body := c.http(http.MethodGet, "/api/v1/devices/"+di, nil, "")
	if status != http.StatusOK {
		return status, ""
	}
	var d struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(body, &d)
	return status, d.Status
}

// runSim runs the device simulator until the test ends and waits until it
// has published.
func (c *testCloud) runSim(code onboardingCode, di string, mod func(*devicesim.Config)) *devicesim.Device {
	c.t.Helper()
	cfg := devicesim.Config{CIS: code.CIS, APN: code.APN, SID: code.SID, AccessToken: code.AT, DeviceID: di, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	d, err := devicesim.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	c.t.Cleanup(func() { cancel(); <-done })
	select {
	case <-d.Ready():
	case <-done:
		c.t.Fatal("device stopped before it was onboarded")
	case <-time.After(20 * time.Second):
		c.t.Fatal("device not onboarded after 20s")
	}
	return d
}

// rawDevice is a hand-driven device connection for protocol tests.
type rawDevice struct {
	t   testing.TB
	cc  *client.Conn
	di  string
	uid string
	at  string
	rt  string
}

// dialRaw connects like iotivity-lite (no CSM); handler serves the cloud's
// requests (nil: 4.04 for everything).
func dialRaw(t testing.TB, addr string, tlsCfg *tls.Config, handler mux.HandlerFunc) (*client.Conn, error) {
	t.Helper()
	router := mux.NewRouter()
	if handler == nil {
		handler = func(w mux.ResponseWriter, r *mux.Message) { _ = w.SetResponse(codes.NotFound, 0, nil) }
	}
	router.DefaultHandle(handler)
	opts := []tcp.Option{
		options.WithMux(router),
		options.WithErrors(func(error) {}),
		options.WithDisableTCPSignalMessageCSM(),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
		// The test decides when the device is silent: no automatic pings.
		options.WithInactivityMonitor(time.Hour, func(*client.Conn) {}),
	}
	if tlsCfg != nil {
		opts = append(opts, options.WithTLS(tlsCfg))
	}
	cc, err := tcp.Dial(addr, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc, nil
}

// onboardRaw signs up with a fresh code, signs in and publishes /light/1.
func (c *testCloud) onboardRaw(cc *client.Conn, di string) *rawDevice {
	c.t.Helper()
	d := &rawDevice{t: c.t, cc: cc, di: di}
	var up ocf.SignUpResponse
	d.mustPost(ocf.PathAccount, ocf.SignUpRequest{DeviceID: di, AuthProvider: "ocfcloud", AccessToken: c.code().AT}, codes.Changed, &up)
	d.uid, d.at, d.rt = up.UserID, up.AccessToken, up.RefreshToken
	d.signIn()
	d.mustPost(ocf.PathRD, ocf.PublishRequest{DeviceID: di, Links: []ocf.Link{{Href: "/light/1", RT: []string{"core.light"}, Policy: &ocf.Policy{BitMask: 1}}}}, codes.Changed, nil)
	return d
}

func (d *rawDevice) signIn() {
	d.t.Helper()
	var s ocf.SessionResponse
	d.mustPost(ocf.PathSession, ocf.SessionRequest{DeviceID: d.di, UserID: d.uid, AccessToken: d.at, Login: true}, codes.Changed, &s)
}

func (d *rawDevice) mustPost(path string, body any, want codes.Code, out any) {
	d.t.Helper()
	code, payload := postOn(d.t, d.cc, path, body)
	if code != want {
		d.t.Fatalf("POST %s: %v %q, want %v", path, code, payload, want)
	}
	if out != nil {
		if err := ocf.Unmarshal(payload, out); err != nil {
			d.t.Fatalf("POST %s answer: %v", path, err)
		}
	}
}

func postOn(t testing.TB, cc *client.Conn, path string, body any) (codes.Code, []byte) {
	t.Helper()
	data, err := ocf.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(data), ocfOpts()...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	payload, _ := resp.ReadBody()
	return resp.Code(), payload
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitClosed(t testing.TB, cc *client.Conn, within time.Duration, what string) {
	t.Helper()
	select {
	case <-cc.Done():
	case <-time.After(within):
		t.Fatalf("connection still open after %v: %s", within, what)
	}
}

// quietLogger discards logs unless GATEWAY_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("GATEWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// postRaw posts bytes as they are (for malformed payloads).
func postRaw(t testing.TB, cc *client.Conn, path string, body []byte) (codes.Code, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(body), ocfOpts()...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	payload, _ := resp.ReadBody()
	return resp.Code(), payload
}
