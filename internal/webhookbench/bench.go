package webhookbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/loadgen"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

// Options configure a run.
type Options struct {
	// Rate is the offered event rate of the latency runs; default 1,000/s.
	Rate float64
	// Duration of each latency run; default 5 s.
	Duration time.Duration
	// Devices is the number of simulated devices, each with one
	// resource-level subscription; default 16.
	Devices int
	// Burst is the number of events of the throughput run; default 20,000.
	Burst int
}

const (
	adminPassword = "bench-admin-secret"
	secret        = "bench-signing-secret-0123456789a" // 32 characters
)

// tracker pairs each event (keyed by the light's power value, unique per
// run) with its start time and the first time its webhook arrived.
type tracker struct {
	mu      sync.Mutex
	start   map[int64]time.Time
	latency map[int64]time.Duration
	last    time.Time
}

func newTracker() *tracker {
	return &tracker{start: map[int64]time.Time{}, latency: map[int64]time.Duration{}}
}

func (t *tracker) sent(k int64, at time.Time) {
	t.mu.Lock()
	t.start[k] = at
	t.mu.Unlock()
}

func (t *tracker) received(r webhook.Received) {
	var body struct {
		Power *int64 `json:"power"`
	}
	if json.Unmarshal(r.Body, &body) != nil || body.Power == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.start[*body.Power]
	if !ok {
		return
	}
	if _, dup := t.latency[*body.Power]; !dup {
		t.latency[*body.Power] = r.At.Sub(s)
		t.last = r.At
	}
}

func (t *tracker) delivered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.latency)
}

// result summarises the events sent in [from, to) keys.
func (t *tracker) result(keys []int64, elapsed time.Duration) loadgen.Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	var lat []time.Duration
	for _, k := range keys {
		if l, ok := t.latency[k]; ok {
			lat = append(lat, l)
		}
	}
	slices.Sort(lat)
	r := loadgen.Result{Requests: int64(len(keys)), Errors: int64(len(keys) - len(lat)), Elapsed: elapsed}
	if n := len(lat); n > 0 {
		r.P50, r.P99, r.Max = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	return r
}

// Run starts a cloud in a temporary directory and prints the table to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	if o.Rate <= 0 {
		o.Rate = 1000
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Devices <= 0 {
		o.Devices = 16
	}
	if o.Burst <= 0 {
		o.Burst = 20000
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := cloud.Scratch(ctx, adminPassword, quiet)
	if err != nil {
		return err
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	client := &http.Client{Timeout: 30 * time.Second}
	token, err := devicesim.PasswordToken(ctx, client, base, "admin", adminPassword)
	if err != nil {
		return err
	}
	var ui struct {
		Sub string `json:"sub"`
	}
	if _, err := callJSON(ctx, client, http.MethodGet, base+"/userinfo", token, nil, &ui); err != nil {
		return err
	}

	tr := newTracker()
	rc := &webhook.Receiver{Secret: secret, OnReceive: tr.received}
	hookURL, stopHook, err := webhook.Serve("127.0.0.1:0", rc)
	if err != nil {
		return err
	}
	defer stopHook()

	fmt.Fprintf(out, "setting up: cloud on %s, %d simulated devices, one resource subscription each, receiver on %s\n", base, o.Devices, hookURL)
	dctx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	fleet, err := devicesim.StartFleet(dctx, devicesim.FleetConfig{
		Count: o.Devices, Device: devicesim.Config{Logger: quiet},
		Codes: &devicesim.APICodes{BaseURL: base, Token: token, HTTP: client},
	}, 60*time.Second)
	if err != nil {
		return err
	}
	devs := fleet.Devices()
	deadline := time.Now().Add(30 * time.Second)
	for _, dev := range devs {
		light := base + "/api/v1/devices/" + dev.DeviceID() + "/light/1"
		for {
			status, err := callJSON(ctx, client, http.MethodGet, light, token, nil, nil)
			if err == nil && status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("twin not readable after 30 s: %d %v", status, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		body, _ := json.Marshal(map[string]any{"eventsUrl": hookURL + "/hook", "eventTypes": []string{"resource_contentchanged"}, "signingSecret": secret})
		if status, err := callJSON(ctx, client, http.MethodPost, light+"/subscriptions", token, body, nil); err != nil || status != http.StatusCreated {
			return fmt.Errorf("subscribe: %d %v", status, err)
		}
	}
	for len(rc.Received()) < len(devs) { // the initial states
		if time.Now().After(deadline) {
			return fmt.Errorf("initial states not delivered after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	nc, err := nats.Connect(c.NATSURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	var key atomic.Int64
	publish := func(ctx context.Context, i int) (int64, error) {
		k := key.Add(1)
		dev := devs[i%len(devs)]
		content, _ := json.Marshal(map[string]any{"state": true, "power": k})
		e := &events.Envelope{DeviceID: dev.DeviceID(), Owner: ui.Sub, Type: events.ResourceChanged, Href: "/light/1",
			Sequence: seq.Next(), Time: time.Now().UTC(), ContentType: events.ContentTypeJSON, Content: content}
		tr.sent(k, time.Now())
		return k, pub.Publish(ctx, e)
	}
	waitAll := func(keys []int64, grace time.Duration) {
		end := time.Now().Add(grace)
		for time.Now().Before(end) {
			if tr.result(keys, 0).Errors == 0 {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// 1. Throughput: a burst published by 8 publishers, timed until the
	// last webhook arrives.
	fmt.Fprintf(out, "run 1: %d events published back to back\n", o.Burst)
	var burstKeys []int64
	var kmu sync.Mutex
	whStream, err := js.Stream(ctx, "OCFCLOUD_WEBHOOKS")
	if err != nil {
		return err
	}
	info, err := whStream.Info(ctx)
	if err != nil {
		return err
	}
	appendedFrom := info.State.LastSeq
	appended := make(chan time.Duration, 1)
	start := time.Now()
	go func() { // when has the fan-out appended the whole burst?
		for time.Since(start) < 2*time.Minute {
			if i, err := whStream.Info(ctx); err == nil && i.State.LastSeq-appendedFrom >= uint64(o.Burst) {
				appended <- time.Since(start)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		appended <- 0
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < o.Burst; i += 8 {
				k, err := publish(ctx, i)
				if err == nil {
					kmu.Lock()
					burstKeys = append(burstKeys, k)
					kmu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	published := time.Since(start)
	waitAll(burstKeys, 60*time.Second)
	tr.mu.Lock()
	burstElapsed := tr.last.Sub(start)
	tr.mu.Unlock()
	burst := tr.result(burstKeys, burstElapsed)
	fanout := <-appended

	settle(ctx, js)

	// 2. Latency at the offered rate, events published as the gateway does.
	fmt.Fprintf(out, "run 2: events published at %.0f/s for %s\n", o.Rate, o.Duration)
	pubKeys, pubElapsed := paced(ctx, o.Rate, o.Duration, func(i int) (int64, bool) {
		k, err := publish(ctx, i)
		return k, err == nil
	})
	waitAll(pubKeys, 10*time.Second)
	pubRes := tr.result(pubKeys, pubElapsed)

	settle(ctx, js)

	// 3. Latency from a device notification: the simulated device changes
	// its light, the gateway observes it, and the webhook carries it.
	fmt.Fprintf(out, "run 3: device notifications at %.0f/s for %s\n", o.Rate, o.Duration)
	// The event's arrival on NATS splits the latency into the gateway's
	// part (device → event) and the webhook part (event → webhook).
	evTr := newTracker()
	evSub, err := nc.Subscribe(events.SubjectAll, func(m *nats.Msg) {
		e, err := events.Decode(m.Data)
		if err != nil || e.Type != events.ResourceChanged {
			return
		}
		body, err := toJSON(e)
		if err != nil {
			return
		}
		evTr.received(webhook.Received{Body: body, At: time.Now()})
	})
	if err != nil {
		return err
	}
	devKeys, devElapsed := paced(ctx, o.Rate, o.Duration, func(i int) (int64, bool) {
		k := key.Add(1)
		now := time.Now()
		tr.sent(k, now)
		evTr.sent(k, now)
		devs[i%len(devs)].SetLight(true, int(k))
		return k, true
	})
	waitAll(devKeys, 10*time.Second)
	_ = evSub.Unsubscribe()
	devRes := tr.result(devKeys, devElapsed)
	gwRes := evTr.result(devKeys, devElapsed)

	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; cloud, devices and receiver in one process; every delivery signature-checked\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	loadgen.WriteTable(out, []loadgen.Row{
		{Name: fmt.Sprintf("burst of %d events, %d subscriptions", o.Burst, len(devs)), Result: burst,
			Note: fmt.Sprintf("events delivered/s; published in %s, fanned out in %s; latency includes queueing", published.Round(time.Millisecond), fanout.Round(time.Millisecond))},
		{Name: fmt.Sprintf("events published at %.0f/s", o.Rate), Result: pubRes, Note: "publish → webhook received; target p99 ≤ 50 ms"},
		{Name: fmt.Sprintf("device notifications at %.0f/s", o.Rate), Result: devRes, Note: "device change → CoAP notification → webhook received; target p99 ≤ 50 ms"},
		{Name: "… of which device change → event on NATS", Result: gwRes, Note: "the gateway's share of the row above (seen by a core NATS observer; errors = not observed)"},
	})
	fmt.Fprintf(out, "\n(errors = events whose webhook did not arrive within the grace period; rejected signatures: %d)\n", rc.Rejected())
	return nil
}

// settle waits until every durable consumer of the event stream (the
// registry's) has caught up, so one run's backlog does not weigh on the
// next, and collects garbage.
func settle(ctx context.Context, js jetstream.JetStream) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		busy := false
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			break
		}
		for name := range s.ConsumerNames(ctx).Name() {
			if c, err := s.Consumer(ctx, name); err == nil {
				if info, err := c.Info(ctx); err == nil && (info.NumPending > 0 || info.NumAckPending > 0) {
					busy = true
				}
			}
		}
		if !busy {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.GC()
	time.Sleep(200 * time.Millisecond)
}

// toJSON returns an event's content as JSON (the devices send OCF CBOR).
func toJSON(e *events.Envelope) ([]byte, error) {
	if e.ContentType == events.ContentTypeJSON {
		return e.Content, nil
	}
	return ocf.CBORToJSON(e.Content)
}

// paced calls send rate times a second for d and returns the keys sent.
func paced(ctx context.Context, rate float64, d time.Duration, send func(i int) (int64, bool)) ([]int64, time.Duration) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	next := start
	var keys []int64
	for i := 0; time.Since(start) < d && ctx.Err() == nil; i++ {
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		next = next.Add(interval)
		if k, ok := send(i); ok {
			keys = append(keys, k)
		}
	}
	return keys, time.Since(start)
}

func callJSON(ctx context.Context, c *http.Client, method, u, token string, body []byte, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, u, err)
		}
	}
	return resp.StatusCode, nil
}
