package gatewaybench

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

var lightRep, _ = ocf.Marshal(map[string]any{"state": false, "power": 0})

// dialDevice connects like iotivity-lite (no CSM) from src and answers the
// cloud's GETs with a small light representation.
func dialDevice(ctx context.Context, addr string, src netip.Addr, tlsCfg *tls.Config) (*client.Conn, error) {
	router := mux.NewRouter()
	router.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
		if r.Code() == codes.GET {
			_ = w.SetResponse(codes.Content, ocf.ContentFormatCBOR, bytes.NewReader(lightRep))
		}
	}))
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	opts := []tcp.Option{
		options.WithContext(ctx),
		options.WithMux(router),
		options.WithErrors(func(error) {}),
		options.WithDisableTCPSignalMessageCSM(),
		options.WithDialer(d),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
	}
	if tlsCfg != nil {
		opts = append(opts, options.WithTLS(tlsCfg))
	}
	return tcp.Dial(addr, opts...)
}

func ocfOptions() []message.Option {
	v := ocf.Uint16Bytes(uint16(ocf.Version1))
	return []message.Option{
		{ID: message.Accept, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))},
		{ID: ocf.OptionAcceptVersion, Value: v},
		{ID: ocf.OptionContentVersion, Value: v},
	}
}

func post(ctx context.Context, cc *client.Conn, path string, body, out any) error {
	data, err := ocf.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(data), ocfOptions()...)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if resp.Code() != codes.Changed && resp.Code() != codes.Created {
		diag, _ := resp.ReadBody()
		return fmt.Errorf("POST %s: %v %s", path, resp.Code(), diag)
	}
	if out != nil {
		b, err := resp.ReadBody()
		if err != nil {
			return err
		}
		return ocf.Unmarshal(b, out)
	}
	return nil
}

// onboard is a device's first connection: sign-up with a code, sign-in,
// publish its light.
func onboard(ctx context.Context, cc *client.Conn, di string) error {
	var up ocf.SignUpResponse
	if err := post(ctx, cc, ocf.PathAccount, signUpRequest(di), &up); err != nil {
		return err
	}
	if err := signIn(ctx, cc, di, up.UserID, up.AccessToken); err != nil {
		return err
	}
	return post(ctx, cc, ocf.PathRD, publishRequest(di), nil)
}

// signUpRequest is a bench device's sign-up, with a code the stand-in
// token endpoint accepts.
func signUpRequest(di string) ocf.SignUpRequest {
	return ocf.SignUpRequest{DeviceID: di, AuthProvider: "ocfcloud", AccessToken: "code-" + di, DeviceType: "device"}
}

// publishRequest publishes a bench device's observable light.
func publishRequest(di string) ocf.PublishRequest {
	return ocf.PublishRequest{DeviceID: di, Links: []ocf.Link{
		{Href: "/light/1", RT: []string{"core.light"}, IF: []string{"oic.if.rw", "oic.if.baseline"}, Policy: &ocf.Policy{BitMask: 1}},
	}}
}

// stepTimes sums the latency of each onboarding step (nanoseconds).
type stepTimes struct{ signUp, signIn, publish atomic.Int64 }

// add records one onboarding that started at t0, signed in at t1 and
// published at t2, until now.
func (st *stepTimes) add(t0, t1, t2 time.Time) {
	st.signUp.Add(int64(t1.Sub(t0)))
	st.signIn.Add(int64(t2.Sub(t1)))
	st.publish.Add(int64(time.Since(t2)))
}

func signIn(ctx context.Context, cc *client.Conn, di, uid, at string) error {
	return post(ctx, cc, ocf.PathSession, ocf.SessionRequest{DeviceID: di, UserID: uid, AccessToken: at, Login: true}, nil)
}
