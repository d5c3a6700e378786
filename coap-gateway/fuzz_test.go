package coapgateway_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/tcp/coder"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

var fuzzRoutes = []string{ocf.PathAccount, ocf.PathSession, ocf.PathTokenRefresh, ocf.PathRD, ocf.PathRes, "/light/1"}

var fuzzMethods = []codes.Code{codes.POST, codes.DELETE, codes.GET, codes.PUT}

// fuzzFrame turns fuzz input into bytes on the wire. Selector byte 0xff sends
// the rest as raw bytes (CoAP-over-TCP framing itself); anything else picks
// a route, a method and a content format and frames the rest as the CBOR (or
// JSON) payload of a well-formed request with the OCF options.
func fuzzFrame(sel, method byte, payload []byte) []byte {
	if sel == 0xff {
		return payload
	}
	path := fuzzRoutes[int(sel)%len(fuzzRoutes)]
	cf := ocf.ContentFormatCBOR
	if sel&0x80 != 0 {
		cf = message.AppJSON
	}
	opts := message.Options{}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	if sel&0x40 != 0 {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: payload[:min(len(payload), 64)]})
	}
	opts = append(opts,
		message.Option{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(cf))},
		message.Option{ID: ocf.OptionAcceptVersion, Value: ocf.Uint16Bytes(uint16(ocf.Version1))},
		message.Option{ID: ocf.OptionContentVersion, Value: ocf.Uint16Bytes(uint16(ocf.Version1))},
	)
	m := message.Message{Code: fuzzMethods[int(method)%len(fuzzMethods)], Token: []byte{1, 2, 3, 4}, Options: opts, Payload: payload}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return payload
	}
	buf := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		return payload
	}
	return buf[:n]
}

// startBareGateway runs only the gateway, on embedded NATS, with an authz
// that rejects every grant: enough for every route to decode its input and
// answer, and light enough for fuzzing workers (no database).
func startBareGateway(tb testing.TB, limits coapgateway.Limits) string {
	tb.Helper()
	return startBareGatewayWithAuthz(tb, limits, http.StatusBadRequest)
}

// startBareGatewayWithAuthz answers every grant with status (400: rejected,
// 5xx: authz down).
func startBareGatewayWithAuthz(tb testing.TB, limits coapgateway.Limits, status int) string {
	tb.Helper()
	return startBareGatewayWith(tb, limits, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
	})
}

// startBareGatewayWith runs the gateway on embedded NATS (with the event
// stream) and authz's token endpoint replaced by token.
func startBareGatewayWith(tb testing.TB, limits coapgateway.Limits, token http.HandlerFunc) string {
	tb.Helper()
	nc, err := nats.Connect(platform.TestNATS(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{Memory: true}); err != nil {
		tb.Fatal(err)
	}
	authz := httptest.NewServer(token)
	tb.Cleanup(authz.Close)
	g, err := coapgateway.New(context.Background(), coapgateway.Config{
		Addr: "127.0.0.1:0", NATS: nc, TokenURL: authz.URL + "/oauth/token",
		Verifier:       auth.NewVerifier(context.Background(), authz.URL, authz.URL+"/jwks", nil),
		Limits:         limits,
		BackendTimeout: time.Second,
		Logger:         quietLogger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Close)
	return g.Addrs()[0].String()
}

// FuzzDeviceRequest feeds requests to a live gateway over a real socket: the
// gateway must answer or close, never crash or hang.
func FuzzDeviceRequest(f *testing.F) {
	signUp, _ := ocf.Marshal(ocf.SignUpRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8", AccessToken: "code"})
	signIn, _ := ocf.Marshal(ocf.SessionRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8", UserID: "u", AccessToken: "t", Login: true})
	refresh, _ := ocf.Marshal(ocf.TokenRefreshRequest{DeviceID: "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8", RefreshToken: "r"})
	publish, _ := ocf.Marshal(ocf.PublishRequest{DeviceID: "d", Links: []ocf.Link{{Href: "/a", Policy: &ocf.Policy{BitMask: 3}}}})
	for sel, body := range [][]byte{signUp, signIn, refresh, publish, {0xa0}, {0xa2, 0x62, 0x64}} {
		f.Add(byte(sel), byte(0), body)
	}
	f.Add(byte(0x80), byte(0), []byte(`{"di":"x","accesstoken":1e999}`))
	f.Add(byte(0x41), byte(1), []byte("di=x&accesstoken=y"))
	f.Add(byte(0xff), byte(0), []byte{0xf0, 0xff, 0xff, 0xff, 0xff, 0x01})       // a length beyond any limit
	f.Add(byte(0xff), byte(0), []byte{0x00, 0xe2})                               // 7.02 Ping without token
	f.Add(byte(0xff), byte(0), []byte{0x01, 0x45, 0x01, 0xbb, 0xff, 0xff, 0xff}) // truncated response
	f.Add(byte(0xff), byte(0), []byte{0x0d, 0x01, 0xff, 0xee})

	addr := startBareGateway(f, coapgateway.Limits{ConnRatePerIP: -1, MaxMessageSize: 64 << 10})
	f.Fuzz(func(t *testing.T, sel, method byte, payload []byte) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Skip("dial:", err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(fuzzFrame(sel, method, payload)); err != nil {
			return
		}
		// A ping after the request: its pong comes after the answer to the
		// request, so the gateway has fully processed it (or closed).
		pong := []byte{0x04, 0xe3, 'p', 'o', 'n', 'g'}
		if _, err := conn.Write([]byte{0x04, 0xe2, 'p', 'o', 'n', 'g'}); err != nil {
			return
		}
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(got, pong) {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			got = append(got, buf[:n]...)
		}
	})
}
