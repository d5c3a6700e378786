package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	coapclient "github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// coapAnswerWithin is how long a hand-driven device waits for any answer:
// the gateway's backend timeout (10 s) plus slack. No answer by then is a
// hang, which a real device cannot tell from a dead cloud.
const coapAnswerWithin = 15 * time.Second

// coapDevice is a device driven by hand over coap+tcp, so that a test sees
// the code of every answer the gateway gives; devicesim hides them behind its
// retry rules. It keeps what a real device keeps: its code until sign-up
// succeeds, then uid, access and refresh token.
type coapDevice struct {
	t    *testing.T
	addr string
	di   string

	mu           sync.Mutex
	code         string // onboarding code, until signed up
	uid          string
	accessToken  string
	refreshToken string
	cc           *coapclient.Conn
}

// newCoAPDevice connects device di to the gateway at addr, as iotivity-lite
// does (no CSM first); it answers the cloud's requests with 4.04.
func newCoAPDevice(t *testing.T, addr, di, code string) *coapDevice {
	t.Helper()
	d := &coapDevice{t: t, addr: addr, di: di, code: code}
	if err := d.redial(); err != nil {
		t.Fatalf("device %s: dial %s: %v", di, addr, err)
	}
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		_ = d.cc.Close()
	})
	return d
}

// redial replaces the device's connection by a new one.
func (d *coapDevice) redial() error {
	router := mux.NewRouter()
	router.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, _ *mux.Message) {
		_ = w.SetResponse(codes.NotFound, 0, nil)
	}))
	cc, err := tcp.Dial(d.addr,
		options.WithMux(router),
		options.WithErrors(func(error) {}),
		options.WithDisableTCPSignalMessageCSM(),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
	)
	if err != nil {
		return err
	}
	d.mu.Lock()
	old := d.cc
	d.cc = cc
	d.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// post sends one OCF request and returns the answer's code and payload, or
// an error when no answer came within coapAnswerWithin.
func (d *coapDevice) post(path string, body any) (codes.Code, []byte, error) {
	data, err := ocf.Marshal(body)
	if err != nil {
		d.t.Fatal(err)
	}
	d.mu.Lock()
	cc := d.cc
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), coapAnswerWithin)
	defer cancel()
	v := ocf.Uint16Bytes(uint16(ocf.Version1))
	resp, err := cc.Post(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(data),
		message.Option{ID: message.Accept, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))},
		message.Option{ID: ocf.OptionAcceptVersion, Value: v},
		message.Option{ID: ocf.OptionContentVersion, Value: v},
	)
	if err != nil {
		return 0, nil, fmt.Errorf("%s POST %s: no answer: %w", d.di, path, err)
	}
	payload, _ := resp.ReadBody()
	return resp.Code(), payload, nil
}

// reconnectAndSignIn dials a new connection and signs in on it.
func (d *coapDevice) reconnectAndSignIn() (codes.Code, error) {
	if err := d.redial(); err != nil {
		return 0, fmt.Errorf("%s: dial: %w", d.di, err)
	}
	return d.signIn()
}

// Each OCF request below returns the gateway's answer code and keeps what a
// successful answer hands out.

func (d *coapDevice) signUp() (codes.Code, error) {
	d.mu.Lock()
	req := ocf.SignUpRequest{DeviceID: d.di, AuthProvider: "ocfcloud", AccessToken: d.code, DeviceType: "device"}
	d.mu.Unlock()
	code, payload, err := d.post(ocf.PathAccount, req)
	if err != nil || code != codes.Changed {
		return code, err
	}
	var resp ocf.SignUpResponse
	if err := ocf.Unmarshal(payload, &resp); err != nil || resp.AccessToken == "" || resp.RefreshToken == "" || resp.UserID == "" {
		return code, fmt.Errorf("sign-up answer %x: %v", payload, err)
	}
	d.mu.Lock()
	d.uid, d.accessToken, d.refreshToken = resp.UserID, resp.AccessToken, resp.RefreshToken
	d.mu.Unlock()
	return code, nil
}

func (d *coapDevice) signIn() (codes.Code, error) {
	d.mu.Lock()
	req := ocf.SessionRequest{DeviceID: d.di, UserID: d.uid, AccessToken: d.accessToken, Login: true}
	d.mu.Unlock()
	code, _, err := d.post(ocf.PathSession, req)
	return code, err
}

func (d *coapDevice) refresh() (codes.Code, error) {
	d.mu.Lock()
	req := ocf.TokenRefreshRequest{DeviceID: d.di, UserID: d.uid, RefreshToken: d.refreshToken}
	d.mu.Unlock()
	code, payload, err := d.post(ocf.PathTokenRefresh, req)
	if err != nil || code != codes.Changed {
		return code, err
	}
	var resp ocf.TokenRefreshResponse
	if err := ocf.Unmarshal(payload, &resp); err != nil || resp.AccessToken == "" {
		return code, fmt.Errorf("refresh answer %x: %v", payload, err)
	}
	d.mu.Lock()
	d.accessToken = resp.AccessToken
	if resp.RefreshToken != "" {
		d.refreshToken = resp.RefreshToken
	}
	d.mu.Unlock()
	return code, nil
}

// publish publishes /light/1 (discoverable, not observable: nobody serves it).
func (d *coapDevice) publish() (codes.Code, error) {
	code, _, err := d.post(ocf.PathRD, ocf.PublishRequest{DeviceID: d.di, Links: []ocf.Link{
		{Href: "/light/1", RT: []string{"core.light"}, IF: []string{"oic.if.baseline"}, Policy: &ocf.Policy{BitMask: 1}},
	}})
	return code, err
}

// mustOnline signs the device up (unless it has already), in and publishes.
func (d *coapDevice) mustOnline() {
	d.t.Helper()
	steps := []deviceRequest{{"sign-in", d.signIn}, {"publish", d.publish}}
	d.mu.Lock()
	if d.uid == "" {
		steps = append([]deviceRequest{{"sign-up", d.signUp}}, steps...)
	}
	d.mu.Unlock()
	for _, s := range steps {
		if code, err := s.do(); err != nil || code != codes.Changed {
			d.t.Fatalf("device %s %s: %v %v", d.di, s.name, code, err)
		}
	}
}

// deviceRequest is one kind of request a device makes, for tables.
type deviceRequest struct {
	name string
	do   func() (codes.Code, error)
}

// outageDevices readies hand-driven devices for an outage, one per kind of
// request, so that each shows the code of its own answers: one online
// (it publishes), one signed up (it reconnects and signs in, as a device
// does after losing its connection), one signed up (it refreshes), and one
// with only its code (it signs up, returned as newcomer). Device ids are
// diPrefix followed by one digit.
func outageDevices(t *testing.T, api *client, coapAddr, diPrefix string) (reqs []deviceRequest, newcomer *coapDevice) {
	t.Helper()
	online := newCoAPDevice(t, coapAddr, diPrefix+"1", onboard(t, api).AT)
	online.mustOnline()
	signingIn := newCoAPDevice(t, coapAddr, diPrefix+"2", onboard(t, api).AT)
	refreshing := newCoAPDevice(t, coapAddr, diPrefix+"3", onboard(t, api).AT)
	for _, d := range []*coapDevice{signingIn, refreshing} {
		if code, err := d.signUp(); err != nil || code != codes.Changed {
			t.Fatalf("device %s: sign-up before the outage: %v %v", d.di, code, err)
		}
	}
	newcomer = newCoAPDevice(t, coapAddr, diPrefix+"4", onboard(t, api).AT)
	return []deviceRequest{
		{"sign-up", newcomer.signUp},
		{"sign-in", signingIn.reconnectAndSignIn},
		{"refresh", refreshing.refresh},
		{"publish", online.publish},
	}, newcomer
}

// outageCheckEvery is how often the tests look at the cloud during an
// outage; each check runs in a loop of its own, so a slow answer delays only
// its own next try.
const outageCheckEvery = 5 * time.Second

// gatewayBackendTimeout is the gateway's default bound on a call to authz,
// NATS or the registry: the longest a device should wait for a 5.03.
const gatewayBackendTimeout = 10 * time.Second

// outageCheck is one thing checked every outageCheckEvery during an outage.
type outageCheck struct {
	name string
	// within is the longest a try may take. No try starts later than that
	// before the end, so that the outage is not held longer for it.
	within time.Duration
	// do tries once and says what it saw, and why that is wrong if it is.
	do func() (seen string, err error)
}

// holdOutage keeps an outage that began at start going for outage, while
// every check runs every outageCheckEvery; a try that takes longer than
// that is followed by the next at once. Besides the given checks, the
// process must stay alive (/healthz 200) and not ready (/readyz 503).
// holdOutage returns when the outage should end and no try is in flight, so
// that every try sees the outage.
func holdOutage(t *testing.T, base string, start time.Time, outage time.Duration, checks ...outageCheck) {
	t.Helper()
	checks = append([]outageCheck{
		httpCheck("/healthz (the process answers)", time.Second, http.StatusOK, false, func() (*http.Request, error) {
			return http.NewRequest(http.MethodGet, base+"/healthz", nil)
		}),
		httpCheck("/readyz", time.Second, http.StatusServiceUnavailable, false, func() (*http.Request, error) {
			return http.NewRequest(http.MethodGet, base+"/readyz", nil)
		}),
	}, checks...)
	var wg sync.WaitGroup
	seen := make([][]string, len(checks))
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for at := start; time.Since(start)+c.within <= outage+time.Second; at = at.Add(outageCheckEvery) {
				if next := time.Now().Add(-outageCheckEvery); at.Before(next) {
					at = next.Add(outageCheckEvery) // the last try was slow: go on at once
				}
				time.Sleep(time.Until(at)) // the outage is held for its length by design
				elapsed := time.Since(start).Round(100 * time.Millisecond)
				what, err := c.do()
				seen[i] = append(seen[i], what)
				if err != nil {
					t.Errorf("%v into the outage: %s: %v", elapsed, c.name, err)
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(time.Until(start.Add(outage)))
	for i, c := range checks {
		t.Logf("during the outage: %s: %s", c.name, strings.Join(seen[i], ", "))
	}
	if d := time.Since(start); d > outage+time.Second {
		t.Logf("the outage lasted %v: tries were still in flight", d.Round(100*time.Millisecond))
	}
}

// httpCheck checks that the request answers want within within, with a
// Retry-After header when retryAfter is set.
func httpCheck(name string, within time.Duration, want int, retryAfter bool, newRequest func() (*http.Request, error)) outageCheck {
	hc := &http.Client{Timeout: within}
	return outageCheck{name: name, within: within, do: func() (string, error) {
		req, err := newRequest()
		if err != nil {
			return "", err
		}
		began := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return "no answer", err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		seen := fmt.Sprintf("%d in %v", resp.StatusCode, time.Since(began).Round(10*time.Millisecond))
		if retryAfter {
			seen += fmt.Sprintf(" (Retry-After %q)", resp.Header.Get("Retry-After"))
		}
		switch {
		case resp.StatusCode != want:
			return seen, fmt.Errorf("answered %d, want %d", resp.StatusCode, want)
		case retryAfter && resp.Header.Get("Retry-After") == "":
			return seen, errors.New("no Retry-After")
		}
		return seen, nil
	}}
}

// apiCheck checks that method path, with api's token and a JSON body,
// answers as httpCheck says.
func apiCheck(api *client, method, path, body string, within time.Duration, want int, retryAfter bool) outageCheck {
	return httpCheck(method+" "+path, within, want, retryAfter, func() (*http.Request, error) {
		req, err := http.NewRequest(method, api.base+path, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+api.token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, nil
	})
}

// deviceChecks checks that each device request answers want[name], and
// within within: a device that waits longer for an answer sees silence, not
// "retry", and resends.
func deviceChecks(reqs []deviceRequest, want map[string]codes.Code, within time.Duration) []outageCheck {
	var out []outageCheck
	for _, r := range reqs {
		out = append(out, outageCheck{name: "device " + r.name, within: within, do: func() (string, error) {
			began := time.Now()
			code, err := r.do()
			took := time.Since(began)
			seen := fmt.Sprintf("%v in %v", code, took.Round(10*time.Millisecond))
			switch {
			case err != nil:
				return "no answer", err
			case code != want[r.name]:
				return seen, fmt.Errorf("answered %v, want %v", code, want[r.name])
			case took > within:
				return seen, fmt.Errorf("answered %v after %v, later than %v", code, took.Round(10*time.Millisecond), within)
			}
			return seen, nil
		}})
	}
	return out
}

// deviceRetryPeriod is how long iotivity-lite waits for a sign-up answer
// before it sends the same request again.
const deviceRetryPeriod = 2 * time.Second

// recovery measures, from the end of an outage, how long until readiness is
// true again and until each device request first answers 2.04 Changed. The
// requests are retried every second, all at once, as devices do on their own
// without anyone restarting anything. A 4.xx answer is final: a device that
// gets one throws its credentials away.
func recovery(t *testing.T, base string, end time.Time, within time.Duration, reqs []deviceRequest) {
	t.Helper()
	var ready time.Duration
	took := map[string]time.Duration{}
	var mu sync.Mutex
	failed := false
	fail := func(format string, args ...any) {
		mu.Lock()
		failed = true
		mu.Unlock()
		t.Errorf(format, args...)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for readyz(base) != http.StatusOK {
			if time.Since(end) > within {
				fail("after the outage: not ready %v after it ended", within)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		ready = time.Since(end)
	}()
	for _, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last string
			for {
				code, err := r.do()
				switch {
				case err == nil && code == codes.Changed:
					mu.Lock()
					took[r.name] = time.Since(end)
					mu.Unlock()
					return
				case err == nil && code >= codes.BadRequest && code < codes.InternalServerError:
					fail("after the outage: %s answered %v: a device would give up", r.name, code)
					return
				case err != nil:
					last = err.Error()
				default:
					last = code.String()
				}
				if time.Since(end) > within {
					fail("after the outage: %s still fails %v after the outage ended: %s", r.name, within, last)
					return
				}
				time.Sleep(time.Second) // devices retry on their own clock
			}
		}()
	}
	wg.Wait()
	var seen []string
	for _, r := range reqs {
		seen = append(seen, fmt.Sprintf("%s after %v", r.name, took[r.name].Round(10*time.Millisecond)))
	}
	t.Logf("after the outage: ready after %v; first success: %s", ready.Round(10*time.Millisecond), strings.Join(seen, ", "))
	if failed {
		t.FailNow()
	}
}

// healthz is the status of base's /healthz, 0 when it does not answer.
func healthz(base string) int {
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
