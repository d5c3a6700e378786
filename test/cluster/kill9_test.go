//go:build cluster

package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

var (
	kill9Devices     = flag.Int("kill9-devices", 1000, "devices in TestKill9OfTheAllInOneServer")
	kill9ChangeEvery = flag.Duration("kill9-change-every", 2*time.Second, "how often each device changes /light/1 in TestKill9OfTheAllInOneServer")
	kill9Load        = flag.Duration("kill9-load", 10*time.Second, "how long the fleet runs with every subscription in place before the kill")
	kill9Grace       = flag.Duration("kill9-grace", 2*time.Second, "changes acknowledged less than this before the kill may be lost (0: none may)")
)

var signInLine = regexp.MustCompile(`msg="device signed in".* device_id=([0-9a-f-]+)`)

// TestKill9OfTheAllInOneServer kills `ocfcloud serve` with SIGKILL while a
// fleet of simulated devices keeps changing /light/1 and every change is
// delivered to a webhook (one resource-level subscription per device, since
// a devices-level subscription carries no resource changes), and starts it
// again on the same data dir. It checks that
//
//   - every device is still registered with its links and twin, and
//     reconnects and signs in again on its own;
//   - for every change the gateway acknowledged to a device before the kill,
//     the twin ends up holding that value or a later one;
//   - every such change made after the device's subscription was created
//     reaches the webhook at least once, before or after the restart, and
//     changes made after the restart reach it too.
//
// "Acknowledged" has to be defined, because CoAP over TCP acknowledges no
// notification: the reliable transport replaces CON/ACK. A change counts as
// acknowledged when the device wrote the notification (or the answer to the
// gateway's observe) to its connection and then got the gateway's pong to a
// 7.02 Ping it sent on the same connection after it. TCP delivers in order
// and the gateway reads a connection's messages in order, so the pong proves
// the gateway had read the change: the most a device can know. The
// simulator reports these with --ack-log (di, href, observe sequence number,
// sent and acknowledged times, value).
//
// A pong does not mean the change is durable: go-coap answers a 7.02 Ping on
// the connection's reader goroutine, while the notification before it waits
// in the connection's queue of received messages and then in the session's
// event queue until JetStream has it. A kill in that window (milliseconds,
// longer under load) loses a change the device saw acknowledged; only the
// re-observe after the reconnect brings the twin up to date again. So the
// webhook check holds for changes acknowledged at least -kill9-grace (2 s)
// before the kill and counts, without failing, those lost within it;
// -kill9-grace 0 makes it strict.
//
// "A later value" means one with a higher observe sequence number. Values
// stand for changes because /light/1's power counts them, modulo 100: the
// test checks that no device sends 100 representations from its
// subscription on, the span the checks compare.
func TestKill9OfTheAllInOneServer(t *testing.T) {
	devices := *kill9Devices
	tp := &topology{t: t, dir: t.ArtifactDir(), procs: map[string]*proc{}}
	t.Logf("process logs in %s", tp.dir)
	data := t.TempDir()
	base := "http://127.0.0.11:8080"
	serve := func(name string) *proc {
		p := tp.start(name, "serve", "--data-dir", filepath.Join(data, "cloud"), "--http-addr", "127.0.0.11:8080",
			"--coap-addr", "127.0.0.11:5683", "--coaps-addr", "-", "--admin-password", "kill9-admin", "--lease-ttl", "3s")
		waitFor(t, name+" ready", 60*time.Second, func() bool { return ready(base) })
		return p
	}
	if listening("127.0.0.11:8080") || listening("127.0.0.11:5683") {
		t.Fatal("127.0.0.11:8080 or :5683 is taken: a process left over from an earlier run?")
	}
	start := time.Now()
	first := serve("serve-1")

	const secret = "kill9-webhook-signing-secret-32c"
	hooks := newHookLog()
	receiver := &webhook.Receiver{Secret: secret, OnReceive: hooks.add}
	hookURL, stopHooks, err := webhook.Serve("127.0.0.1:0", receiver)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopHooks)

	ackFile := filepath.Join(tp.dir, "acks.csv")
	tp.start("fleet", "device-sim", "--count", fmt.Sprint(devices), "--api-url", base, "--username", "admin",
		"--password", "kill9-admin", "--change-every", kill9ChangeEvery.String(), "--ping-interval", "2s",
		"--log-level", "warn", "--ack-log", ackFile)

	token := func() string {
		resp, err := http.PostForm(base+"/oauth/token", url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {"kill9-admin"}})
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return tok.AccessToken
	}
	a := &api{t: t, base: base, token: token()}
	count := func(filter string) int {
		st, body := a.call(http.MethodGet, "/api/v1/devices?$count=true&$top=0&$filter="+url.QueryEscape(filter), "")
		var p struct {
			TotalCount int `json:"TotalCount"`
		}
		if st != http.StatusOK || json.Unmarshal([]byte(body), &p) != nil {
			return -1
		}
		return p.TotalCount
	}
	waitFor(t, fmt.Sprintf("%d devices online", devices), 180*time.Second, func() bool { return count("online eq true") == devices })
	onlineAt := time.Now()

	// One resource-level subscription per device, eight at a time.
	all := listDevices(t, a)
	if len(all) != devices {
		t.Fatalf("listed %d devices, want %d", len(all), devices)
	}
	subscribedAt := map[string]time.Time{} // di → when its subscription was answered
	subOf := map[string]string{}           // subscription id → di
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for di := range work {
				body := fmt.Sprintf(`{"eventsUrl":%q,"eventTypes":["resource_contentchanged"],"signingSecret":%q}`, hookURL+"/"+di, secret)
				st, answer := a.call(http.MethodPost, "/api/v1/devices/"+di+"/light/1/subscriptions", body)
				var sub struct {
					SubscriptionID string `json:"subscriptionId"`
				}
				if st != http.StatusCreated || json.Unmarshal([]byte(answer), &sub) != nil {
					t.Errorf("subscribe %s: %d %s", di, st, answer)
					continue
				}
				mu.Lock()
				subscribedAt[di], subOf[sub.SubscriptionID] = time.Now(), di
				mu.Unlock()
			}
		}()
	}
	for _, d := range all {
		work <- d.Device.DI
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	subscribed := time.Now()
	time.Sleep(*kill9Load) // the fleet keeps changing lights; webhooks flow

	killedAt := time.Now()
	first.kill() // SIGKILL under load
	deliveredBeforeKill := hooks.total()
	serve("serve-2")
	restarted := time.Now()
	a.token = token() // the signing key is durable; a new token is just convenient
	waitFor(t, "every device registered after the restart", 30*time.Second, func() bool { return count("") == devices })
	// Online state from before the crash is not trusted: every device must
	// sign in again through the new gateway instance by itself.
	waitFor(t, "every device signed in again on its own", 180*time.Second, func() bool {
		log, _ := os.ReadFile(filepath.Join(tp.dir, "serve-2.log"))
		signedIn := map[string]bool{}
		for _, m := range signInLine.FindAllSubmatch(log, -1) {
			signedIn[string(m[1])] = true
		}
		return len(signedIn) == devices && count("online eq true") == devices
	})
	backOnline := time.Now()

	// Acknowledged before the kill: the last per device, and those made
	// after the device's subscription existed, which the webhook must get.
	acks := readAcks(t, ackFile)
	lastBefore := map[string]ackLine{}
	var mustDeliver []ackLine
	ackedBefore := 0
	for di, list := range acks {
		for _, l := range list {
			if !l.acked.Before(killedAt) {
				continue
			}
			ackedBefore++
			if l.seq > lastBefore[di].seq {
				lastBefore[di] = l
			}
			if at, ok := subscribedAt[di]; ok && l.sent.After(at) {
				mustDeliver = append(mustDeliver, l)
			}
		}
	}
	if len(lastBefore) != devices {
		t.Fatalf("%d of %d devices had a change acknowledged before the kill", len(lastBefore), devices)
	}

	// The twin holds the last acknowledged value or a later one. Devices
	// keep changing, so the twin may show a change not acknowledged yet:
	// remember every value each twin showed, and pass a device once one of
	// them turns up in the log at or after its last acknowledged change.
	var stale []string
	shown := map[string]map[lightValue]bool{}
	atOrPast := map[string]bool{}
	twinsOK := eventually(60*time.Second, func() bool {
		for _, d := range listDevices(t, a) {
			di := d.Device.DI
			for _, l := range d.Links {
				var twin lightValue
				if l.Href == "/"+di+"/light/1" && json.Unmarshal(l.Rep, &twin) == nil {
					if shown[di] == nil {
						shown[di] = map[lightValue]bool{}
					}
					shown[di][twin] = true
				}
			}
		}
		acks = readAcks(t, ackFile)
		stale = stale[:0]
		for di, last := range lastBefore {
			for _, l := range acks[di] {
				if l.seq >= last.seq && shown[di][l.value] {
					atOrPast[di] = true
				}
			}
			if !atOrPast[di] {
				latest := acks[di][len(acks[di])-1]
				stale = append(stale, fmt.Sprintf("%s: twin showed %v; last acknowledged before the kill %+v (seq %d), latest %+v (seq %d, acked %s)",
					di, shown[di], last.value, last.seq, latest.value, latest.seq, latest.acked.Format("15:04:05.000")))
			}
		}
		return len(stale) == 0
	})
	twinsDone := time.Now()
	if !twinsOK {
		t.Errorf("%d of %d twins behind the last change acknowledged before the kill (killed at %s), e.g.\n%s", len(stale), devices, killedAt.Format("15:04:05.000"), strings.Join(stale[:min(len(stale), 10)], "\n"))
		for _, line := range stale[:min(len(stale), 3)] {
			di, _, _ := strings.Cut(line, ":")
			_, twin := a.call(http.MethodGet, "/api/v1/devices/"+di+"/light/1", "")
			_, live := a.call(http.MethodGet, "/api/v1/devices/"+di+"/light/1?twin=false", "")
			t.Logf("%s now: twin %s, device %s", di, twin, live)
		}
	}
	// Values identify changes only while a device makes fewer than 100
	// (power counts modulo 100) in the span the checks compare: from its
	// subscription on.
	for di, list := range acks {
		var first, last uint32
		for _, l := range list {
			if l.sent.After(subscribedAt[di]) {
				if first == 0 {
					first = l.seq
				}
				last = l.seq
			}
		}
		if last-first >= 100 {
			t.Errorf("device %s sent %d representations since its subscription: power wraps at 100, so values no longer identify a change", di, last-first)
		}
	}

	// Every acknowledged change after subscribing reached the webhook.
	var missing []ackLine
	var inGrace []ackLine // missing, but acknowledged within the grace before the kill
	undelivered := func() {
		missing, inGrace = missing[:0], inGrace[:0]
		got := hooks.values(subOf)
		for _, l := range mustDeliver {
			switch {
			case got[l.di][l.value] > 0:
			case l.acked.After(killedAt.Add(-*kill9Grace)):
				inGrace = append(inGrace, l)
			default:
				missing = append(missing, l)
			}
		}
	}
	hooksOK := eventually(120*time.Second, func() bool { undelivered(); return len(missing) == 0 })
	deliveredAt := time.Now()
	// A few seconds more for those within the grace, which may be lost.
	eventually(5*time.Second, func() bool { undelivered(); return len(missing)+len(inGrace) == 0 })
	// Deliveries go on after the restart: each device's webhook gets a
	// change the device made after it was back online.
	var silent []string
	resumedOK := eventually(60*time.Second, func() bool {
		silent = silent[:0]
		got := hooks.values(subOf)
		acks = readAcks(t, ackFile)
		for di := range lastBefore {
			resumed := false
			for _, l := range acks[di] {
				if l.sent.After(backOnline) && got[di][l.value] > 0 {
					resumed = true
				}
			}
			if !resumed {
				silent = append(silent, di)
			}
		}
		return len(silent) == 0
	})
	resumedAt := time.Now()
	if !resumedOK {
		t.Errorf("%d of %d devices' webhooks got no change made after the restart, e.g. %v", len(silent), devices, silent[:min(len(silent), 5)])
	}
	for _, l := range inGrace {
		t.Logf("lost within the grace: %s seq %d %+v sent %s acked %s (kill %s)", l.di, l.seq, l.value,
			l.sent.Format("15:04:05.000"), l.acked.Format("15:04:05.000"), killedAt.Format("15:04:05.000"))
	}
	if !hooksOK {
		var ex []string
		for _, l := range missing[:min(len(missing), 10)] {
			ex = append(ex, fmt.Sprintf("%s seq %d %+v sent %s acked %s (kill %s)", l.di, l.seq, l.value,
				l.sent.Format("15:04:05.000"), l.acked.Format("15:04:05.000"), killedAt.Format("15:04:05.000")))
		}
		t.Errorf("%d of %d acknowledged changes never reached the webhook, e.g.\n%s", len(missing), len(mustDeliver), strings.Join(ex, "\n"))
	}
	if n := receiver.Rejected(); n > 0 {
		t.Errorf("%d webhook requests failed signature checks", n)
	}

	total, redelivered, repeated := hooks.stats(subOf)
	t.Logf("devices %d, change every %s, ping every 2s; onboarded in %s, %d subscriptions in %s, killed after %s of load",
		devices, *kill9ChangeEvery, onlineAt.Sub(start).Round(time.Second), len(subOf), subscribed.Sub(onlineAt).Round(time.Second), kill9Load)
	t.Logf("acknowledged before the kill: %d changes (%d after the device's subscription, which the webhook must get); webhooks received before the kill: %d",
		ackedBefore, len(mustDeliver), deliveredBeforeKill)
	t.Logf("restart: ready %s after the kill; every device signed in and online %s after the kill",
		restarted.Sub(killedAt).Round(100*time.Millisecond), backOnline.Sub(killedAt).Round(100*time.Millisecond))
	t.Logf("twin: %d/%d devices at or past their last acknowledged change, %s after the kill",
		devices-len(stale), devices, twinsDone.Sub(killedAt).Round(100*time.Millisecond))
	t.Logf("webhooks: %d/%d acknowledged changes delivered (%d not, acknowledged less than %s before the kill; the rest by %s after the kill); every device's webhook had a change made after the restart %s after the kill; %d deliveries in all, %d redelivered (same webhook-id), %d repeated values under a new webhook-id (initial state, re-observe after reconnect)",
		len(mustDeliver)-len(missing)-len(inGrace), len(mustDeliver), len(inGrace), kill9Grace, deliveredAt.Sub(killedAt).Round(100*time.Millisecond), resumedAt.Sub(killedAt).Round(100*time.Millisecond), total, redelivered, repeated)

	for _, d := range listDevices(t, a) {
		if len(d.Links) != 3 {
			t.Errorf("device %s has %d links after the restart", d.Device.DI, len(d.Links))
		}
		for _, l := range d.Links {
			if len(l.Rep) == 0 {
				t.Errorf("device %s: no twin content for %s", d.Device.DI, l.Href)
			}
		}
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return true
}

// lightValue is /light/1's representation; comparable, so it is a map key.
type lightValue struct {
	State bool   `json:"state"`
	Power int64  `json:"power"`
	Name  string `json:"name"`
}

type listedDevice struct {
	Device struct{ DI string } `json:"device"`
	Links  []struct {
		Href string          `json:"href"`
		Rep  json.RawMessage `json:"rep"`
	} `json:"links"`
}

// listDevices pages through GET /api/v1/devices?content=all.
func listDevices(t *testing.T, a *api) []listedDevice {
	t.Helper()
	var all []listedDevice
	for skip := 0; ; skip += 100 {
		st, body := a.call(http.MethodGet, fmt.Sprintf("/api/v1/devices?$top=100&$skip=%d&content=all", skip), "")
		if st != http.StatusOK {
			t.Fatalf("list devices: %d %s", st, body)
		}
		var page []listedDevice
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatalf("list devices: %v", err)
		}
		all = append(all, page...)
		if len(page) < 100 {
			return all
		}
	}
}

// ackLine is one line of the simulator's --ack-log.
type ackLine struct {
	di          string
	seq         uint32
	sent, acked time.Time
	value       lightValue
}

// readAcks reads the complete lines of the simulator's --ack-log, by device
// in the order written.
func readAcks(t *testing.T, path string) map[string][]ackLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1] // the line being written is not complete
	} else {
		data = nil
	}
	out := map[string][]ackLine{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ",", 6)
		if len(f) != 6 {
			t.Fatalf("ack log line %q", sc.Text())
		}
		seq, err1 := strconv.ParseUint(f[2], 10, 32)
		sent, err2 := strconv.ParseInt(f[3], 10, 64)
		acked, err3 := strconv.ParseInt(f[4], 10, 64)
		var v lightValue
		if err := json.Unmarshal([]byte(f[5]), &v); err != nil || err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("ack log line %q", sc.Text())
		}
		out[f[0]] = append(out[f[0]], ackLine{di: f[0], seq: uint32(seq), sent: time.UnixMilli(sent), acked: time.UnixMilli(acked), value: v})
	}
	return out
}

// hookLog indexes webhook deliveries as they arrive, so that polling it
// costs nothing however many there are.
type hookLog struct {
	mu     sync.Mutex
	n      int
	bySub  map[string]map[lightValue]int // subscription id → value → deliveries
	byHook map[string]int                // webhook-id → deliveries
}

func newHookLog() *hookLog {
	return &hookLog{bySub: map[string]map[lightValue]int{}, byHook: map[string]int{}}
}

func (h *hookLog) add(r webhook.Received) {
	var v lightValue
	_ = json.Unmarshal(r.Body, &v)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	h.byHook[r.WebhookID]++
	if h.bySub[r.SubscriptionID] == nil {
		h.bySub[r.SubscriptionID] = map[lightValue]int{}
	}
	h.bySub[r.SubscriptionID][v]++
}

func (h *hookLog) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// values is di → value → deliveries.
func (h *hookLog) values(subOf map[string]string) map[string]map[lightValue]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]map[lightValue]int{}
	for sub, vs := range h.bySub {
		m := map[lightValue]int{}
		for v, n := range vs {
			m[v] = n
		}
		out[subOf[sub]] = m
	}
	return out
}

// stats: all deliveries, deliveries beyond the first of a webhook-id, and
// values delivered more than once under different webhook-ids.
func (h *hookLog) stats(subOf map[string]string) (total, redelivered, repeated int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.byHook {
		redelivered += n - 1
	}
	for _, vs := range h.bySub {
		for _, n := range vs {
			if n > 1 {
				repeated += n - 1
			}
		}
	}
	return h.n, redelivered, repeated - redelivered
}
