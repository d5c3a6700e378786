package c2capi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	c2capi "github.com/ocfcloud/ocfcloud/c2c-api"
	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

const adminPassword = "admin-secret"

type stack struct {
	t     testing.TB
	c     *cloud.Cloud
	base  string
	token string
	sub   string
}

func startStack(t testing.TB) *stack {
	t.Helper()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		AdminPassword: adminPassword, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s := &stack{t: t, c: c, base: "http://" + c.HTTPAddr()}
	s.token = s.passwordToken("")
	var ui struct {
		Sub string `json:"sub"`
	}
	s.getJSON("/userinfo", http.StatusOK, &ui)
	s.sub = ui.Sub
	return s
}

func (s *stack) passwordToken(scope string) string {
	form := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {adminPassword}}
	if scope != "" {
		form.Set("scope", scope)
	}
	resp, err := http.PostForm(s.base+"/oauth/token", form)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		s.t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}

func (s *stack) do(method, path, token string, body io.Reader, header map[string]string) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func (s *stack) getJSON(path string, want int, out any) http.Header {
	s.t.Helper()
	resp, body := s.do(http.MethodGet, path, s.token, nil, nil)
	if resp.StatusCode != want {
		s.t.Fatalf("GET %s: %d, want %d: %s", path, resp.StatusCode, want, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			s.t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	return resp.Header
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seedDevices registers n devices through the event stream, as gateways
// would: names dev-0000…, every even one online.
func (s *stack) seedDevices(n int) {
	s.t.Helper()
	nc, err := nats.Connect(s.c.NATSURL())
	if err != nil {
		s.t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	ctx := context.Background()
	for i := range n {
		di := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		info, _ := ocf.Marshal(ocf.DeviceInfo{Name: fmt.Sprintf("dev-%04d", i), DeviceID: di, RT: []string{"oic.wk.d", "oic.d.light"},
			Manufacturer: []ocf.LocalizedValue{{Language: "en", Value: "ocfcloud"}}})
		links, _ := json.Marshal(events.ResourcesPublishedContent{Links: []ocf.Link{{Href: "/oic/d", RT: []string{"oic.wk.d", "oic.d.light"}}}})
		evs := []*events.Envelope{
			{Type: events.ResourcesPublished, ContentType: events.ContentTypeJSON, Content: links},
			{Type: events.ResourceChanged, Href: "/oic/d", ContentType: events.ContentTypeOCFCBOR, Content: info},
		}
		if i%2 == 0 {
			evs = append(evs, &events.Envelope{Type: events.DeviceOnline})
		}
		for _, e := range evs {
			e.DeviceID, e.Owner, e.Sequence, e.Time = di, s.sub, seq.Next(), time.Now().UTC()
			if err := pub.Publish(ctx, e); err != nil {
				s.t.Fatal(err)
			}
		}
	}
	waitFor(s.t, fmt.Sprintf("%d devices in the registry", n), func() bool {
		var page struct {
			TotalCount int `json:"TotalCount"`
		}
		s.getJSON("/api/v1/devices?$top=0&$count=true&$filter="+url.QueryEscape("startswith(name,'dev-')"), http.StatusOK, &page)
		return page.TotalCount == n
	})
}

// onboardDevice runs a simulated device with a fresh onboarding code until
// the test ends (or stop is called), and returns once its /light/1 is
// readable in the twin.
func (s *stack) onboardDevice(di string) (dev *devicesim.Device, stop func()) {
	s.t.Helper()
	resp, body := s.do(http.MethodPost, "/api/v1/onboarding-codes", s.token, nil, nil)
	if resp.StatusCode != http.StatusCreated {
		s.t.Fatalf("code: %d %s", resp.StatusCode, body)
	}
	var code struct{ CIS, AT string }
	_ = json.Unmarshal(body, &code)
	dev, err := devicesim.New(devicesim.Config{CIS: code.CIS, AccessToken: code.AT, DeviceID: di, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		s.t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = dev.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	s.t.Cleanup(stop)
	<-dev.Ready()
	waitFor(s.t, "twin", func() bool {
		r, _ := s.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", s.token, nil, nil)
		return r.StatusCode == http.StatusOK
	})
	return dev, stop
}

type device struct {
	Device struct {
		DI string   `json:"di"`
		N  string   `json:"n"`
		RT []string `json:"rt"`
	} `json:"device"`
	Status string            `json:"status"`
	Links  []json.RawMessage `json:"links"`
}

func TestDeviceListsPageAndQuery(t *testing.T) {
	s := startStack(t)
	const n = 1000
	s.seedDevices(n)

	// Default: an OCF array of at most 100 with Link and X-Total-Count.
	var first []device
	h := s.getJSON("/api/v1/devices", http.StatusOK, &first)
	if len(first) != 100 || h.Get("X-Total-Count") != "1000" || !strings.Contains(h.Get("Link"), `rel="next"`) {
		t.Fatalf("first page: %d items, headers %v", len(first), h)
	}
	if first[0].Device.N != "dev-0000" || first[0].Status != "online" || first[1].Status != "offline" {
		t.Fatalf("first items: %+v %+v", first[0], first[1])
	}

	// The answers match the OCF C2C swagger, the wire contract.
	schemas := ocfSchemas(t)
	_, one := s.do(http.MethodGet, "/api/v1/devices/00000000-0000-4000-8000-000000000000", s.token, nil, nil)
	validateOCF(t, schemas, "Device", one)
	_, all := s.do(http.MethodGet, "/api/v1/devices/00000000-0000-4000-8000-000000000000?content=all", s.token, nil, nil)
	validateOCF(t, schemas, "DeviceContentAll", all)

	// The envelope: follow Next until it is absent; every device exactly once.
	seen := map[string]bool{}
	next := s.base + "/api/v1/devices?$inlinecount=allpages&$top=70"
	pages := 0
	for next != "" {
		u, _ := url.Parse(next)
		var page struct {
			Value      []device `json:"value"`
			TotalCount int      `json:"TotalCount"`
			Next       string   `json:"Next"`
		}
		s.getJSON(u.RequestURI(), http.StatusOK, &page)
		if page.TotalCount != n {
			t.Fatalf("TotalCount %d", page.TotalCount)
		}
		for _, d := range page.Value {
			if seen[d.Device.DI] {
				t.Fatalf("device %s twice", d.Device.DI)
			}
			seen[d.Device.DI] = true
		}
		next = page.Next
		pages++
	}
	if len(seen) != n || pages != 15 {
		t.Fatalf("paged %d devices in %d pages", len(seen), pages)
	}

	count := func(filter string) int {
		var page struct {
			TotalCount int `json:"TotalCount"`
		}
		s.getJSON("/api/v1/devices?$count=true&$top=0&$filter="+url.QueryEscape(filter), http.StatusOK, &page)
		return page.TotalCount
	}
	for filter, want := range map[string]int{
		"online eq true":                               500,
		"not online":                                   500,
		"startswith(name,'dev-00')":                    100,
		"contains(name,'99')":                          19,
		"name ge 'dev-0990' and name lt 'dev-0995'":    5,
		"online eq true or name eq 'dev-0001'":         501,
		"types eq 'oic.d.light'":                       1000,
		"owner eq '" + s.sub + "'":                     1000,
		"di eq '00000000-0000-4000-8000-000000000007'": 1,
	} {
		if got := count(filter); got != want {
			t.Errorf("$filter=%s: %d, want %d", filter, got, want)
		}
	}

	var desc []device
	s.getJSON("/api/v1/devices?$top=2&$orderby="+url.QueryEscape("name desc"), http.StatusOK, &desc)
	if len(desc) != 2 || desc[0].Device.N != "dev-0999" || desc[1].Device.N != "dev-0998" {
		t.Fatalf("$orderby name desc: %+v", desc)
	}
	var byStatus []device
	s.getJSON("/api/v1/devices?$top=1&$orderby="+url.QueryEscape("online desc,name desc"), http.StatusOK, &byStatus)
	if byStatus[0].Device.N != "dev-0998" {
		t.Fatalf("$orderby online desc,name desc: %+v", byStatus)
	}

	var selected []map[string]any
	s.getJSON("/api/v1/devices?$top=3&$select=status", http.StatusOK, &selected)
	if len(selected) != 3 || len(selected[0]) != 1 || selected[0]["status"] == nil {
		t.Fatalf("$select=status: %v", selected)
	}

	var expanded []struct {
		Links []struct {
			Href string         `json:"href"`
			Rep  map[string]any `json:"rep"`
		} `json:"links"`
	}
	s.getJSON("/api/v1/devices?$top=1&$expand=resources", http.StatusOK, &expanded)
	if expanded[0].Links[0].Rep["n"] != "dev-0000" {
		t.Fatalf("$expand=resources: %+v", expanded)
	}
	s.getJSON("/api/v1/devices?$top=1&content=all", http.StatusOK, &expanded)
	if expanded[0].Links[0].Rep["n"] != "dev-0000" || expanded[0].Links[0].Href != "/00000000-0000-4000-8000-000000000000/oic/d" {
		t.Fatalf("content=all: %+v", expanded)
	}

	// Malformed options: 400 problem naming the option and the position.
	for q, want := range map[string]string{
		"$filter=" + url.QueryEscape("name eq"):        "$filter: unexpected end of expression at position 8",
		"$filter=" + url.QueryEscape("nam eq 'x'"):     `$filter: unknown field \"nam\" at position 1`,
		"$orderby=" + url.QueryEscape("name sideways"): "$orderby",
		"$top=101":   "$top",
		"$skip=x":    "$skip",
		"content=no": "content",
	} {
		resp, body := s.do(http.MethodGet, "/api/v1/devices?"+q, s.token, nil, nil)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %s, want 400 naming %q", q, resp.StatusCode, body, want)
		}
	}
}

func TestResourceReadsAndUpdatesThroughTheDevice(t *testing.T) {
	s := startStack(t)
	const di = "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8"
	dev, _ := s.onboardDevice(di)
	light := "/api/v1/devices/" + di + "/light/1"

	// Twin reads carry an ETag and answer 304 when nothing changed.
	r1, _ := s.do(http.MethodGet, light, s.token, nil, nil)
	etag := r1.Header.Get("ETag")
	if etag == "" || r1.Header.Get("OCF-Status") != "2.05" {
		t.Fatalf("twin headers %v", r1.Header)
	}
	if r, _ := s.do(http.MethodGet, light, s.token, nil, map[string]string{"If-None-Match": etag}); r.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.StatusCode)
	}

	// An update goes to the device; its answer comes back, and the change
	// reaches the twin through the observation.
	r2, b2 := s.do(http.MethodPost, light, s.token, strings.NewReader(`{"state":true,"power":9}`), map[string]string{"Content-Type": "application/json"})
	if r2.StatusCode != http.StatusOK || r2.Header.Get("OCF-Status") != "2.04" || !strings.Contains(string(b2), `"power":9`) {
		t.Fatalf("update: %d %v %s", r2.StatusCode, r2.Header, b2)
	}
	if st, pw, _ := dev.Light(); !st || pw != 9 {
		t.Fatalf("device light %v %d", st, pw)
	}
	waitFor(t, "twin updated", func() bool {
		_, b := s.do(http.MethodGet, light, s.token, nil, nil)
		return strings.Contains(string(b), `"power":9`)
	})
	// The changed twin has a new ETag: the old one no longer answers 304.
	r3, b3 := s.do(http.MethodGet, light, s.token, nil, map[string]string{"If-None-Match": etag})
	if r3.StatusCode != http.StatusOK || r3.Header.Get("ETag") == etag || r3.Header.Get("Last-Modified") == "" || !strings.Contains(string(b3), `"power":9`) {
		t.Fatalf("changed twin: %d %v %s", r3.StatusCode, r3.Header, b3)
	}
	dev.SetLight(false, 4)
	_, live := s.do(http.MethodGet, light+"?twin=false", s.token, nil, nil)
	if !strings.Contains(string(live), `"power":4`) {
		t.Fatalf("live read: %s", live)
	}
	// OCF CBOR on request.
	rc, bc := s.do(http.MethodGet, light+"?twin=false", s.token, nil, map[string]string{"Accept": "application/vnd.ocf+cbor"})
	var m map[string]any
	if rc.Header.Get("Content-Type") != "application/vnd.ocf+cbor" || ocf.Unmarshal(bc, &m) != nil || m["power"] != int64(4) {
		t.Fatalf("CBOR answer: %v %x", rc.Header, bc)
	}

	for name, c := range map[string]struct {
		method, path, body string
		want               int
	}{
		"wrong type":     {http.MethodPost, light, `{"state":"on"}`, http.StatusBadRequest},
		"malformed JSON": {http.MethodPost, light, `{"state":`, http.StatusBadRequest},
		"unknown href":   {http.MethodPost, "/api/v1/devices/" + di + "/nope", `{}`, http.StatusNotFound},
		"unknown device": {http.MethodGet, "/api/v1/devices/00000000-0000-4000-8000-000000000000/light/1", "", http.StatusNotFound},
		"bad twin flag":  {http.MethodGet, light + "?twin=maybe", "", http.StatusBadRequest},
	} {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		if r, b := s.do(c.method, c.path, s.token, body, map[string]string{"Content-Type": "application/json"}); r.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", name, r.StatusCode, b, c.want)
		}
	}

	// Bodies: media type parameters, CBOR, other types, the size bound with
	// and without a Content-Length.
	cborBody, _ := ocf.Marshal(map[string]any{"power": 7})
	big := `{"power":1,"pad":"` + strings.Repeat("x", 300<<10) + `"}`
	for name, c := range map[string]struct {
		contentType string
		body        io.Reader
		want        int
	}{
		"JSON with charset":  {"application/json; charset=utf-8", strings.NewReader(`{"power":6}`), http.StatusOK},
		"OCF CBOR":           {"application/vnd.ocf+cbor", bytes.NewReader(cborBody), http.StatusOK},
		"malformed CBOR":     {"application/vnd.ocf+cbor", bytes.NewReader([]byte{0xff}), http.StatusBadRequest},
		"plain text":         {"text/plain", strings.NewReader(`power=6`), http.StatusUnsupportedMediaType},
		"too large":          {"application/json", strings.NewReader(big), http.StatusRequestEntityTooLarge},
		"too large, chunked": {"application/json", io.MultiReader(strings.NewReader(big)), http.StatusRequestEntityTooLarge},
	} {
		if r, b := s.do(http.MethodPost, light, s.token, c.body, map[string]string{"Content-Type": c.contentType}); r.StatusCode != c.want {
			t.Errorf("%s: %d %.200s, want %d", name, r.StatusCode, b, c.want)
		}
	}

	// A read-only token may not update: 403 insufficient_scope.
	ro := s.passwordToken("r:resources:*")
	if r, _ := s.do(http.MethodPost, light, ro, strings.NewReader(`{}`), nil); r.StatusCode != http.StatusForbidden || !strings.Contains(r.Header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Fatalf("read-only update: %d %v", r.StatusCode, r.Header)
	}

	// Offboarding forgets the device.
	if r, b := s.do(http.MethodDelete, "/api/v1/devices/"+di, s.token, nil, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("offboard: %d %s", r.StatusCode, b)
	}
	waitFor(t, "device forgotten", func() bool {
		r, _ := s.do(http.MethodGet, "/api/v1/devices/"+di, s.token, nil, nil)
		return r.StatusCode == http.StatusNotFound
	})
}

func TestEveryRouteIsDocumentedAndTheHelpBrowserIsServed(t *testing.T) {
	s := startStack(t)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	resp, body := s.do(http.MethodGet, "/api/v1/openapi.json", "", nil, nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &doc) != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi.json: %d", resp.StatusCode)
	}
	for _, pattern := range c2capi.RoutePatterns() {
		method, path, _ := strings.Cut(pattern, " ")
		path = strings.ReplaceAll(path, "...}", "}")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s is not in openapi.json", pattern)
		}
	}
	resp, body = s.do(http.MethodGet, "/api/v1/help/", "", nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "openapi.json") {
		t.Fatalf("help browser: %d %.200s", resp.StatusCode, body)
	}
}

func TestGzipCORSAndRequestIDs(t *testing.T) {
	s := startStack(t)
	req, _ := http.NewRequest(http.MethodGet, s.base+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("X-Request-Id", "trace-123")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("X-Request-Id") != "trace-123" {
		t.Fatalf("headers %v", resp.Header)
	}
	// A token in the query string is never accepted.
	if r, _ := s.do(http.MethodGet, "/api/v1/devices?access_token="+s.token, "", nil, nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("query token: %d", r.StatusCode)
	}
}
