package coapgateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// The quirks real devices have: a retried sign-up, a reconnect that only
// signs in, a token refresh, unpublish by instance id, wrong methods.
func TestDeviceRetriesSignUpReconnectsRefreshesAndUnpublishes(t *testing.T) {
	c := startTestCloud(t, nil)
	const di = "8a7b6c5d-4e3f-4a1b-8c9d-0e1f2a3b4c5d"
	code := c.code().AT
	cc, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	signUp := ocf.SignUpRequest{DeviceID: di, AuthProvider: "ocfcloud", AccessToken: code, DeviceType: "device"}
	d := &rawDevice{t: t, cc: cc, di: di}
	var first, retry ocf.SignUpResponse
	d.mustPost(ocf.PathAccount, signUp, codes.Changed, &first)
	d.mustPost(ocf.PathAccount, signUp, codes.Changed, &retry)
	if retry != first {
		t.Fatalf("retried sign-up answered differently:\n%+v\n%+v", first, retry)
	}
	other := signUp
	other.DeviceID = "00000000-1111-4222-8333-444444444444"
	if code, _ := postOn(t, cc, ocf.PathAccount, other); code != codes.Unauthorized {
		t.Fatalf("the code for another di: %v, want 4.01", code)
	}
	d.uid, d.at, d.rt = first.UserID, first.AccessToken, first.RefreshToken
	d.signIn()
	links := []ocf.Link{
		{Href: "/light/1", RT: []string{"core.light"}, InstanceID: 7, Policy: &ocf.Policy{BitMask: 1}},
		{Href: "/switch/1", RT: []string{"oic.r.switch.binary"}, Policy: &ocf.Policy{BitMask: 1}},
	}
	var echoed ocf.PublishRequest
	d.mustPost(ocf.PathRD, ocf.PublishRequest{DeviceID: di, Links: links}, codes.Changed, &echoed)
	if len(echoed.Links) != 2 || echoed.Links[0].DeviceID != di || echoed.Links[0].InstanceID != 7 || echoed.Links[1].InstanceID == 0 {
		t.Fatalf("publish echo: %+v", echoed.Links)
	}
	waitFor(t, "links stored by the registry", 10*time.Second, func() bool {
		status, body := c.http(http.MethodGet, "/api/v1/devices/"+di, nil, "")
		var dev struct {
			Links []json.RawMessage `json:"links"`
		}
		return status == http.StatusOK && json.Unmarshal(body, &dev) == nil && len(dev.Links) == 2
	})
	_ = cc.Close()

	// Reconnect: only sign in; the cloud still knows the links.
	cc2, err := dialRaw(t, c.coapAddr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.cc = cc2
	d.signIn()
	var res []ocf.Link
	waitFor(t, "links restored after reconnect", 5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cc2.Get(ctx, ocf.PathRes, ocfOpts()...)
		if err != nil || resp.Code() != codes.Content {
			return false
		}
		body, _ := resp.ReadBody()
		return ocf.Unmarshal(body, &res) == nil && len(res) == 2
	})
	for _, l := range res {
		if l.Href != "/"+di+"/light/1" && l.Href != "/"+di+"/switch/1" {
			t.Errorf("/oic/res href %q is not a C2C path", l.Href)
		}
	}

	// Refresh rotates the refresh token; the new access token signs in.
	var ref ocf.TokenRefreshResponse
	d.mustPost(ocf.PathTokenRefresh, ocf.TokenRefreshRequest{DeviceID: di, UserID: d.uid, RefreshToken: d.rt}, codes.Changed, &ref)
	if ref.AccessToken == "" || ref.RefreshToken == "" || ref.RefreshToken == d.rt {
		t.Fatalf("refresh answer %+v", ref)
	}
	if code, _ := postOn(t, cc2, ocf.PathTokenRefresh, ocf.TokenRefreshRequest{DeviceID: di, UserID: d.uid, RefreshToken: d.rt}); code != codes.Unauthorized {
		t.Fatalf("reused refresh token: %v, want 4.01", code)
	}
	d.at = ref.AccessToken
	d.signIn()

	// Unpublish by instance id.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc2.Delete(ctx, ocf.PathRD, append(ocfOpts(), message.Option{ID: message.URIQuery, Value: []byte("di=" + di)}, message.Option{ID: message.URIQuery, Value: []byte("ins=7")})...)
	if err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("unpublish: %v %v", resp, err)
	}
	resp, err = cc2.Get(ctx, ocf.PathRes, ocfOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := resp.ReadBody()
	if err := ocf.Unmarshal(body, &res); err != nil || len(res) != 1 || res[0].Href != "/"+di+"/switch/1" {
		t.Fatalf("after unpublish: %+v %v", res, err)
	}

	// Wrong methods are 4.05 with a diagnostic.
	for _, path := range []string{ocf.PathSession, ocf.PathTokenRefresh} {
		resp, err := cc2.Get(ctx, path, ocfOpts()...)
		if err != nil || resp.Code() != codes.MethodNotAllowed {
			t.Errorf("GET %s: %v %v, want 4.05", path, resp, err)
		}
	}
	// Malformed CBOR on every route: 4.00 with a diagnostic; the session lives on.
	for _, path := range []string{ocf.PathAccount, ocf.PathSession, ocf.PathTokenRefresh, ocf.PathRD} {
		code, diag := postRaw(t, cc2, path, []byte{0xa2, 0x62, 0x64})
		if code != codes.BadRequest || len(diag) == 0 {
			t.Errorf("malformed CBOR to %s: %v %q, want 4.00 with a diagnostic", path, code, diag)
		}
	}
	d.mustPost(ocf.PathRD, ocf.PublishRequest{DeviceID: di, Links: links[:1]}, codes.Changed, nil)

	// Sign-out keeps the connection but ends the session.
	d.mustPost(ocf.PathSession, ocf.SessionRequest{DeviceID: di, UserID: d.uid, AccessToken: d.at, Login: false}, codes.Changed, nil)
	if code, _ := postOn(t, cc2, ocf.PathRD, ocf.PublishRequest{DeviceID: di, Links: links}); code != codes.Unauthorized {
		t.Fatalf("publish after sign-out: %v, want 4.01", code)
	}
	if _, err := do(t, c, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"}); !errors.Is(err, commands.ErrNoGateway) {
		t.Fatalf("command after sign-out: %v, want ErrNoGateway", err)
	}
}

// When authz is down the device gets 5.03 with a diagnostic and retries;
// it is not an auth failure, so the connection stays open.
func TestBackendDownIsServiceUnavailable(t *testing.T) {
	addr := startBareGatewayWithAuthz(t, coapgateway.Limits{}, http.StatusServiceUnavailable)
	cc, err := dialRaw(t, addr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := ocf.SignUpRequest{DeviceID: "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901", AuthProvider: "ocfcloud", AccessToken: "code"}
	for range 4 {
		code, diag := postOn(t, cc, ocf.PathAccount, req)
		if code != codes.ServiceUnavailable || len(diag) == 0 {
			t.Fatalf("sign-up with authz down: %v %q, want 5.03 with a diagnostic", code, diag)
		}
	}
	select {
	case <-cc.Done():
		t.Fatal("connection closed for a backend outage")
	default:
	}
}

// The session ends when the access token expires: the device must refresh
// and sign in again.
func TestTokenExpiryEndsTheSession(t *testing.T) {
	addr := startBareGatewayWith(t, coapgateway.Limits{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"short-lived","refresh_token":"r","expires_in":1,"user_id":"u1"}`))
	})
	cc, err := dialRaw(t, addr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const di = "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b"
	d := &rawDevice{t: t, cc: cc, di: di}
	var up ocf.SignUpResponse
	d.mustPost(ocf.PathAccount, ocf.SignUpRequest{DeviceID: di, AccessToken: "code"}, codes.Changed, &up)
	if up.ExpiresIn != 1 {
		t.Fatalf("expiresin %d", up.ExpiresIn)
	}
	var sess ocf.SessionResponse
	d.mustPost(ocf.PathSession, ocf.SessionRequest{DeviceID: di, UserID: up.UserID, AccessToken: up.AccessToken, Login: true}, codes.Changed, &sess)
	if sess.ExpiresIn < 0 || sess.ExpiresIn > 1 {
		t.Fatalf("sign-in expiresin %d, want 0..1", sess.ExpiresIn)
	}
	waitFor(t, "session ended by token expiry", 5*time.Second, func() bool {
		code, _ := postOn(t, cc, ocf.PathRD, ocf.PublishRequest{DeviceID: di, Links: []ocf.Link{{Href: "/a"}}})
		return code == codes.Unauthorized
	})
}
