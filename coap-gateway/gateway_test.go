package coapgateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

func startCloud(t *testing.T) *cloud.Cloud {
	t.Helper()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		AdminPassword: "admin-secret", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// dialDevice connects like iotivity-lite: no CSM, OCF options on requests.
func dialDevice(t *testing.T, c *cloud.Cloud) *client.Conn {
	t.Helper()
	cc, err := tcp.Dial(c.CoAPAddrs()[0].String(), options.WithDisableTCPSignalMessageCSM())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func ocfOpts() []message.Option {
	v := ocf.Uint16Bytes(uint16(ocf.Version1))
	return []message.Option{
		{ID: message.Accept, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))},
		{ID: ocf.OptionAcceptVersion, Value: v},
		{ID: ocf.OptionContentVersion, Value: v},
	}
}

func post(t *testing.T, cc *client.Conn, path string, body []byte) (codes.Code, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(body), ocfOpts()...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	payload, _ := resp.ReadBody()
	return resp.Code(), string(payload)
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := ocf.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMalformedSignUpIsBadRequestWithDiagnostic(t *testing.T) {
	cc := dialDevice(t, startCloud(t))
	for name, body := range map[string][]byte{
		"truncated CBOR": {0xa2, 0x62, 0x64},
		"not a map":      {0x01},
		"bad di":         mustCBOR(t, ocf.SignUpRequest{DeviceID: "not-a-uuid", AccessToken: "x"}),
		"no code":        mustCBOR(t, ocf.SignUpRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8"}),
	} {
		code, diag := post(t, cc, ocf.PathAccount, body)
		if code != codes.BadRequest || !strings.Contains(diag, "sign-up") {
			t.Errorf("%s: got %v %q, want 4.00 with a diagnostic", name, code, diag)
		}
	}
	// The connection still serves after bad input.
	if code, _ := post(t, cc, ocf.PathAccount, []byte{0x01}); code != codes.BadRequest {
		t.Fatalf("after bad input: %v", code)
	}
}

func TestUnknownCodeIsUnauthorizedAndRepeatedFailuresCloseTheConnection(t *testing.T) {
	cc := dialDevice(t, startCloud(t))
	body := mustCBOR(t, ocf.SignUpRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8", AuthProvider: "ocfcloud", AccessToken: "made-up-code"})
	for i := 0; i < 3; i++ {
		if code, _ := post(t, cc, ocf.PathAccount, body); code != codes.Unauthorized {
			t.Fatalf("attempt %d: %v, want 4.01", i, code)
		}
	}
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open after 3 auth failures")
	}
}

func TestRequestsBeforeSignInAreUnauthorized(t *testing.T) {
	cc := dialDevice(t, startCloud(t))
	publish := mustCBOR(t, ocf.PublishRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8", Links: []ocf.Link{{Href: "/light/1"}}})
	if code, _ := post(t, cc, ocf.PathRD, publish); code != codes.Unauthorized {
		t.Fatalf("publish before sign-in: %v", code)
	}
	if code, _ := post(t, cc, "/some/other", []byte{0xa0}); code != codes.Unauthorized {
		t.Fatalf("unknown path before sign-in: %v", code)
	}
	signIn := mustCBOR(t, ocf.SessionRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8", UserID: "u", AccessToken: "not-a-jwt", Login: true})
	if code, _ := post(t, cc, ocf.PathSession, signIn); code != codes.Unauthorized {
		t.Fatalf("sign-in with a bad token: %v", code)
	}
}

func TestOCFVersionOptionsAreAccepted(t *testing.T) {
	cc := dialDevice(t, startCloud(t))
	// Without registration go-coap would answer 4.02 Bad Option; the gateway
	// must get far enough to judge the body.
	code, _ := post(t, cc, ocf.PathAccount, []byte{0x01})
	if code == codes.BadOption {
		t.Fatal("OCF options 2049/2053 rejected")
	}
}
