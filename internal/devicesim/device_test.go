package devicesim

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// testLog forwards device logs to t.Log until the test ends; go-coap may
// report errors from its goroutines a moment after Run returns.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// run is a running Device.Run; err is valid once done is closed.
type run struct {
	done chan struct{}
	err  error
}

// startDevice runs a device against f until the test ends.
func startDevice(t *testing.T, f *fakeCloud, mod func(*Config)) (*Device, *run) {
	t.Helper()
	lw := &testLog{t: t}
	cfg := Config{
		CIS:          f.cis(),
		APN:          "ocfcloud",
		SID:          "cloud-1",
		AccessToken:  fakeCode,
		PingInterval: 200 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{done: make(chan struct{})}
	go func() {
		r.err = d.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
			if r.err != nil && !errors.Is(r.err, ErrUnauthorized) {
				t.Errorf("Run: %v", r.err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return d, r
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitReady(t *testing.T, d *Device, timeout time.Duration) {
	t.Helper()
	select {
	case <-d.Ready():
	case <-time.After(timeout):
		t.Fatalf("device not ready after %v", timeout)
	}
}

// cloudDo sends a request from the cloud side of the connection, as the
// gateway will, and decodes the answer.
func cloudDo(t *testing.T, cc *client.Conn, method codes.Code, path string, body any) (codes.Code, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var (
		req *pool.Message
		err error
	)
	switch method {
	case codes.GET:
		req, err = cc.NewGetRequest(ctx, path, ocfOptions()...)
	case codes.POST:
		b, merr := ocf.Marshal(body)
		if merr != nil {
			t.Fatal(merr)
		}
		req, err = cc.NewPostRequest(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(b), ocfOptions()...)
	case codes.DELETE:
		req, err = cc.NewDeleteRequest(ctx, path, ocfOptions()...)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cc.ReleaseMessage(req)
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatalf("%v %s: %v", method, path, err)
	}
	defer cc.ReleaseMessage(resp)
	data, _ := resp.ReadBody()
	var out map[string]any
	if cf, err := resp.ContentFormat(); err == nil && cf == ocf.ContentFormatCBOR && len(data) > 0 {
		if err := ocf.Unmarshal(data, &out); err != nil {
			t.Fatalf("%v %s answer: %v", method, path, err)
		}
		if v, err := resp.GetOptionUint32(ocf.OptionContentVersion); err != nil || v != ocf.Version1 {
			t.Errorf("%v %s answer: option 2053 = %v, %v; want 0x0800", method, path, v, err)
		}
	}
	return resp.Code(), out
}

func assertKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

func assertNoOptionProblems(t *testing.T, reqs []recorded) {
	t.Helper()
	for _, r := range reqs {
		if r.optErr != "" {
			t.Errorf("%v %s: %s", r.method, r.path, r.optErr)
		}
	}
}

func TestSimulatorSignsUpSignsInAndPublishes(t *testing.T) {
	f := newFakeCloud(t)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)

	reqs := f.requests()
	var paths []string
	for _, r := range reqs {
		paths = append(paths, r.path)
		if r.method != codes.POST {
			t.Errorf("%s: method %v, want POST", r.path, r.method)
		}
	}
	if want := []string{ocf.PathAccount, ocf.PathSession, ocf.PathRD}; !slices.Equal(paths, want) {
		t.Fatalf("requests = %v, want %v", paths, want)
	}
	assertNoOptionProblems(t, reqs)

	up := reqs[0].body
	assertKeys(t, "sign-up", up, "di", "authprovider", "accesstoken", "devicetype")
	if up["di"] != d.DeviceID() || up["authprovider"] != "ocfcloud" || up["accesstoken"] != fakeCode || up["devicetype"] != "device" {
		t.Errorf("sign-up = %v", up)
	}

	in := reqs[1].body
	assertKeys(t, "sign-in", in, "di", "uid", "accesstoken", "login")
	if in["di"] != d.DeviceID() || in["uid"] != fakeUID || in["accesstoken"] != "access-1" || in["login"] != true {
		t.Errorf("sign-in = %v", in)
	}
	d.credMu.Lock()
	cred := d.cred
	d.credMu.Unlock()
	if cred.refreshToken != "refresh-1" || cred.expiresAt.IsZero() || time.Until(cred.expiresAt) > 3000*time.Second {
		t.Errorf("credentials after sign-in: uid %q, refresh %q, expires %v", cred.uid, cred.refreshToken, cred.expiresAt)
	}

	pub := reqs[2].body
	if pub["di"] != d.DeviceID() {
		t.Errorf("publish di = %v", pub["di"])
	}
	links, ok := pub["links"].([]any)
	if !ok {
		t.Fatalf("publish links = %T, want array", pub["links"])
	}
	type wantLink struct {
		rt, ifs []any
		bm      int64
	}
	want := map[string]wantLink{
		"/oic/d":   {rt: []any{"oic.wk.d", "oic.d.light"}, ifs: []any{"oic.if.r", "oic.if.baseline"}, bm: 1},
		"/oic/p":   {rt: []any{"oic.wk.p"}, ifs: []any{"oic.if.r", "oic.if.baseline"}, bm: 1},
		"/light/1": {rt: []any{"core.light"}, ifs: []any{"oic.if.rw", "oic.if.baseline"}, bm: 3},
	}
	seenIns := map[int64]bool{}
	for _, l := range links {
		link := l.(map[string]any)
		href, _ := link["href"].(string)
		w, ok := want[href]
		if !ok {
			t.Errorf("unexpected link %v", link)
			continue
		}
		delete(want, href)
		if link["di"] != d.DeviceID() {
			t.Errorf("%s di = %v", href, link["di"])
		}
		if !slices.Equal(link["rt"].([]any), w.rt) || !slices.Equal(link["if"].([]any), w.ifs) {
			t.Errorf("%s rt/if = %v %v", href, link["rt"], link["if"])
		}
		p, _ := link["p"].(map[string]any)
		if bm, ok := p["bm"].(int64); !ok || bm != w.bm {
			t.Errorf("%s p.bm = %#v, want CBOR integer %d", href, p["bm"], w.bm)
		}
		ins, ok := link["ins"].(int64)
		if !ok || seenIns[ins] {
			t.Errorf("%s ins = %#v, want a distinct CBOR integer", href, link["ins"])
		}
		seenIns[ins] = true
	}
	if len(want) > 0 {
		t.Errorf("links missing: %v", want)
	}

	// Real devices neither open with a CSM nor stay silent: they ping.
	waitFor(t, 5*time.Second, "a ping from the device", func() bool { return f.signalCount(codes.Ping) > 0 })
	if n := f.signalCount(codes.CSM); n != 0 {
		t.Errorf("device sent %d CSM messages, want none", n)
	}
}

func TestSimulatorAnswersGetAndNotifiesObservers(t *testing.T) {
	f := newFakeCloud(t)
	d, _ := startDevice(t, f, func(c *Config) { c.Name = "kitchen" })
	waitReady(t, d, 10*time.Second)
	cc := f.conn(1)

	code, dev := cloudDo(t, cc, codes.GET, "/oic/d", nil)
	if code != codes.Content || dev["n"] != "kitchen" || dev["di"] != d.DeviceID() ||
		dev["dmv"] != "ocf.res.1.3.0" || dev["icv"] != "ocf.2.0.5" || dev["piid"] == "" {
		t.Errorf("GET /oic/d = %v %v", code, dev)
	}
	code, plat := cloudDo(t, cc, codes.GET, "/oic/p", nil)
	if code != codes.Content || plat["mnmn"] != "ocfcloud" || plat["pi"] == "" {
		t.Errorf("GET /oic/p = %v %v", code, plat)
	}
	code, light := cloudDo(t, cc, codes.GET, "/light/1", nil)
	if code != codes.Content || light["state"] != false || light["power"] != int64(0) || light["name"] != "Light" {
		t.Errorf("GET /light/1 = %v %#v", code, light)
	}
	if code, _ := cloudDo(t, cc, codes.GET, "/nope", nil); code != codes.NotFound {
		t.Errorf("GET /nope = %v, want 4.04", code)
	}
	if code, _ := cloudDo(t, cc, codes.DELETE, "/light/1", nil); code != codes.MethodNotAllowed {
		t.Errorf("DELETE /light/1 = %v, want 4.05", code)
	}

	type note struct {
		seq  uint32
		cf   message.MediaType
		body map[string]any
	}
	notes := make(chan note, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := cc.Observe(ctx, "/light/1", func(m *pool.Message) {
		// The message is pooled: copy what we need before returning.
		var n note
		n.seq, _ = m.Observe()
		n.cf, _ = m.ContentFormat()
		data, _ := m.ReadBody()
		_ = ocf.Unmarshal(data, &n.body)
		notes <- n
	}, ocfOptions()...)
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	next := func(what string) note {
		t.Helper()
		select {
		case n := <-notes:
			if n.cf != ocf.ContentFormatCBOR {
				t.Errorf("%s: content format %v, want 10000", what, n.cf)
			}
			return n
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s", what)
			return note{}
		}
	}
	first := next("observe answer")
	if first.body["state"] != false || first.body["power"] != int64(0) {
		t.Errorf("observe answer = %v", first.body)
	}

	d.SetLight(true, 42)
	n := next("notification after SetLight")
	if n.body["state"] != true || n.body["power"] != int64(42) || n.body["name"] != "Light" || n.seq <= first.seq {
		t.Errorf("notification = seq %d %#v (first seq %d)", n.seq, n.body, first.seq)
	}

	// An update from the cloud answers 2.04 with the new content and notifies.
	code, upd := cloudDo(t, cc, codes.POST, "/light/1", map[string]any{"power": 7, "name": "desk"})
	if code != codes.Changed || upd["state"] != true || upd["power"] != int64(7) || upd["name"] != "desk" {
		t.Errorf("POST /light/1 = %v %v", code, upd)
	}
	n2 := next("notification after POST")
	if n2.body["power"] != int64(7) || n2.seq <= n.seq {
		t.Errorf("notification = seq %d %v", n2.seq, n2.body)
	}
	if state, power, name := d.Light(); !state || power != 7 || name != "desk" {
		t.Errorf("Light() = %v %v %q", state, power, name)
	}

	// Observe=1 deregisters.
	if err := obs.Cancel(ctx, ocfOptions()...); err != nil {
		t.Fatalf("cancel observation: %v", err)
	}
	waitFor(t, 2*time.Second, "the observer to be removed", func() bool {
		d.obsMu.Lock()
		defer d.obsMu.Unlock()
		return len(d.observers) == 0
	})
}

func TestSimulatorRetriesSignUpWithSameCode(t *testing.T) {
	f := newFakeCloud(t)
	f.dropSignUps.Store(1)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)

	ups := f.requestsTo(ocf.PathAccount)
	if len(ups) != 2 {
		t.Fatalf("sign-ups = %d, want 2", len(ups))
	}
	for i, u := range ups {
		if u.body["accesstoken"] != fakeCode || u.body["di"] != d.DeviceID() || u.conn != 1 {
			t.Errorf("sign-up %d = conn %d %v, want the same code and di on the same connection", i, u.conn, u.body)
		}
	}
	if gap := ups[1].at.Sub(ups[0].at); gap < 1500*time.Millisecond || gap > 3500*time.Millisecond {
		t.Errorf("retry came %v after the first sign-up, want about 2s", gap)
	}
	assertNoOptionProblems(t, f.requests())
}

func TestSimulatorReconnectsAndOnlySignsIn(t *testing.T) {
	f := newFakeCloud(t)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)

	if err := f.conn(1).Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a publish on a second connection", func() bool { return f.isPublished(2) })

	var second []string
	for _, r := range f.requests() {
		if r.conn == 2 {
			second = append(second, r.path)
		}
	}
	if want := []string{ocf.PathSession, ocf.PathRD}; !slices.Equal(second, want) {
		t.Errorf("second connection requests = %v, want %v", second, want)
	}
	if n := len(f.requestsTo(ocf.PathAccount)); n != 1 {
		t.Errorf("sign-ups = %d, want 1", n)
	}
	assertNoOptionProblems(t, f.requests())

	// The new connection serves the cloud too.
	if code, light := cloudDo(t, f.conn(2), codes.GET, "/light/1", nil); code != codes.Content || light["name"] != "Light" {
		t.Errorf("GET /light/1 after reconnect = %v %v", code, light)
	}
}

func TestSimulatorRefreshesTokenWhenSignInIsRejected(t *testing.T) {
	f := newFakeCloud(t)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)

	f.rejectSignIns.Store(1)
	if err := f.conn(1).Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a publish on a second connection", func() bool { return f.isPublished(2) })

	var second []recorded
	for _, r := range f.requests() {
		if r.conn == 2 {
			second = append(second, r)
		}
	}
	var paths []string
	for _, r := range second {
		paths = append(paths, r.path)
	}
	want := []string{ocf.PathSession, ocf.PathTokenRefresh, ocf.PathSession, ocf.PathRD}
	if !slices.Equal(paths, want) {
		t.Fatalf("second connection requests = %v, want %v", paths, want)
	}
	refresh := second[1].body
	assertKeys(t, "token refresh", refresh, "di", "uid", "refreshtoken")
	if refresh["refreshtoken"] != "refresh-1" || refresh["uid"] != fakeUID || refresh["di"] != d.DeviceID() {
		t.Errorf("token refresh = %v", refresh)
	}
	if second[2].body["accesstoken"] != "access-2" {
		t.Errorf("sign-in after refresh used %v, want access-2", second[2].body["accesstoken"])
	}
	assertNoOptionProblems(t, f.requests())
}

func TestSimulatorStopsWhenSignUpIsRejected(t *testing.T) {
	f := newFakeCloud(t)
	_, r := startDevice(t, f, func(c *Config) { c.AccessToken = "not-a-code" })
	select {
	case <-r.done:
		if !errors.Is(r.err, ErrUnauthorized) {
			t.Fatalf("Run = %v, want ErrUnauthorized", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept going after sign-up 4.01")
	}
	if n := len(f.requestsTo(ocf.PathAccount)); n != 1 {
		t.Errorf("sign-ups = %d, want 1 (4.01 is final)", n)
	}
}

func TestUpdateWithWrongTypeIs400(t *testing.T) {
	f := newFakeCloud(t)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)
	cc := f.conn(1)

	for _, body := range []map[string]any{
		{"power": "high"},
		{"state": 1},
		{"name": 5},
		{"state": true, "power": 1.5},
		{"unknown": 1},
	} {
		if code, _ := cloudDo(t, cc, codes.POST, "/light/1", body); code != codes.BadRequest {
			t.Errorf("POST /light/1 %v = %v, want 4.00", body, code)
		}
	}
	if state, power, name := d.Light(); state || power != 0 || name != "Light" {
		t.Errorf("light changed by rejected updates: %v %v %q", state, power, name)
	}
}

func TestSimulatorDropsLinkAfterMissedPongs(t *testing.T) {
	f := newFakeCloud(t)
	p := newStallProxy(t, f.addr)
	d, _ := startDevice(t, f, func(c *Config) { c.CIS = "coap+tcp://" + p.addr })
	waitReady(t, d, 10*time.Second)

	stalledAt := time.Now()
	p.stall()
	waitFor(t, 10*time.Second, "a publish on a second connection", func() bool { return f.isPublished(2) })
	// Two ping intervals (200 ms each) must pass unanswered before the drop.
	if took := time.Since(stalledAt); took < 400*time.Millisecond {
		t.Errorf("reconnected %v after the link stalled, before two pongs could be missed", took)
	}
	var second []string
	for _, r := range f.requests() {
		if r.conn == 2 {
			second = append(second, r.path)
		}
	}
	if want := []string{ocf.PathSession, ocf.PathRD}; !slices.Equal(second, want) {
		t.Errorf("second connection requests = %v, want %v", second, want)
	}
}

func TestSimulatorRefreshesTokenBeforeItExpires(t *testing.T) {
	f := newFakeCloud(t)
	f.signInLife.Store(1) // refresh due 0.9 s after sign-in
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)
	waitFor(t, 5*time.Second, "a token refresh", func() bool { return len(f.requestsTo(ocf.PathTokenRefresh)) > 0 })
	f.signInLife.Store(3000)
	waitFor(t, 5*time.Second, "a sign-in with the new token", func() bool {
		for _, r := range f.requestsTo(ocf.PathSession) {
			if r.body["accesstoken"] == "access-2" {
				return true
			}
		}
		return false
	})
	for _, r := range f.requests() {
		if r.conn != 1 {
			t.Errorf("%s on connection %d, want everything on the first connection", r.path, r.conn)
		}
	}
	if n := len(f.requestsTo(ocf.PathRD)); n != 1 {
		t.Errorf("publishes = %d, want 1: a refresh keeps the links", n)
	}
	assertNoOptionProblems(t, f.requests())
}

func TestSimulatorRefreshesExpiredTokenBeforeSigningIn(t *testing.T) {
	f := newFakeCloud(t)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)

	// Let the token lapse while the device is offline.
	d.credMu.Lock()
	d.cred.expiresAt = time.Now().Add(-time.Second)
	d.credMu.Unlock()
	if err := f.conn(1).Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a publish on a second connection", func() bool { return f.isPublished(2) })
	var second []string
	for _, r := range f.requests() {
		if r.conn == 2 {
			second = append(second, r.path)
		}
	}
	if want := []string{ocf.PathTokenRefresh, ocf.PathSession, ocf.PathRD}; !slices.Equal(second, want) {
		t.Errorf("second connection requests = %v, want %v", second, want)
	}
}

func TestSimulatorRetriesSignUpAfterServerError(t *testing.T) {
	f := newFakeCloud(t)
	f.failSignUps.Store(1)
	d, _ := startDevice(t, f, nil)
	waitReady(t, d, 10*time.Second)

	ups := f.requestsTo(ocf.PathAccount)
	if len(ups) != 2 || ups[1].body["accesstoken"] != fakeCode {
		t.Fatalf("sign-ups = %d, want 2 with the same code", len(ups))
	}
	if gap := ups[1].at.Sub(ups[0].at); gap < 1500*time.Millisecond || gap > 3500*time.Millisecond {
		t.Errorf("retry came %v after the 5.03, want about 2s", gap)
	}
}
