package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

func TestEventSignatureMatchesPlgdVector(t *testing.T) {
	got := webhook.EventSignature("a", "b", "devices_online", "c", 0, 0, nil)
	if got != "72150f5f9795e728fa594ece9fa6aa2f0e8877e8d36be89246782cfed00216c3" {
		t.Fatalf("signature %s", got)
	}
}

func TestStandardSignatureMatchesTheSpecExample(t *testing.T) {
	// The example of the Standard Webhooks specification.
	key := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	h := http.Header{}
	h.Set(webhook.HeaderWebhookID, "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set(webhook.HeaderWebhookTimestamp, "1614265330")
	h.Set(webhook.HeaderWebhookSignature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	body := []byte(`{"test": 2432232314}`)
	if err := webhook.VerifyStandard(h, key, body, time.Unix(1614265330, 0), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := webhook.VerifyStandard(h, key, body, time.Unix(1614265330+3600, 0), 5*time.Minute); !errors.Is(err, webhook.ErrTooOld) {
		t.Fatalf("old timestamp: %v", err)
	}
}

func TestReceiverVerifiesBothSignatures(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	rc := &webhook.Receiver{Secret: secret}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	c := webhook.NewClient(webhook.ClientOptions{})
	body := []byte(`{"content":[{"di":"d1"}]}`)
	d := webhook.Delivery{ContentType: "application/json", EventType: "devices_online", SubscriptionID: "s1", Sequence: 3, EventTime: time.Unix(1700000000, 0), WebhookID: "s1:3"}
	h := http.Header{}
	webhook.Sign(h, secret, d, body, time.Now())
	if st, err := c.Post(context.Background(), srv.URL, h, body); err != nil || st != http.StatusNoContent {
		t.Fatalf("post: %d %v", st, err)
	}
	got := rc.Received()
	if len(got) != 1 || got[0].Sequence != 3 || got[0].WebhookID != "s1:3" || string(got[0].Body) != string(body) {
		t.Fatalf("received %+v", got)
	}
	// A tampered body or a wrong secret fails.
	if st, _ := c.Post(context.Background(), srv.URL, h, []byte(`{}`)); st != http.StatusUnauthorized {
		t.Fatalf("tampered: %d", st)
	}
	h2 := http.Header{}
	webhook.Sign(h2, strings.Repeat("x", 32), d, body, time.Now())
	if st, _ := c.Post(context.Background(), srv.URL, h2, body); st != http.StatusUnauthorized || rc.Rejected() != 2 {
		t.Fatalf("wrong secret: %d, rejected %d", st, rc.Rejected())
	}
}

func TestPolicyRefusesMetadataAndHonoursLists(t *testing.T) {
	p, err := webhook.NewPolicy(nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, bad := range []string{"http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "ftp://example.com/", "http:///x", "http://user:pw@127.0.0.1/", "javascript:alert(1)"} {
		if err := p.ValidateURL(ctx, bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:9/x", "https://10.1.2.3/hook", "http://localhost:8080/"} {
		if err := p.ValidateURL(ctx, ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	strict, _ := webhook.NewPolicy([]string{"10.1.0.0/16"}, []string{"203.0.113.0/24"}, true)
	for addr, want := range map[string]bool{"127.0.0.1": false, "10.1.2.3": true, "10.2.0.1": false, "203.0.113.9": false, "8.8.8.8": true, "::ffff:127.0.0.1": false} {
		if got := strict.Check(netip.MustParseAddr(addr)) == nil; got != want {
			t.Errorf("%s allowed=%v, want %v", addr, got, want)
		}
	}
	if _, err := webhook.NewPolicy([]string{"nope"}, []string{"1.2.3.4/99"}, false); err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "1.2.3.4/99") {
		t.Fatalf("bad ranges: %v", err)
	}
}

func TestClientDoesNotFollowRedirectsOrDialDeniedAddresses(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	defer redirect.Close()
	c := webhook.NewClient(webhook.ClientOptions{})
	if st, err := c.Post(context.Background(), redirect.URL, http.Header{}, nil); err != nil || st != http.StatusFound {
		t.Fatalf("redirect: %d %v", st, err)
	}
	deny, _ := webhook.NewPolicy(nil, nil, true) // loopback denied at dial time
	c2 := webhook.NewClient(webhook.ClientOptions{Policy: deny})
	if _, err := c2.Post(context.Background(), target.URL, http.Header{}, nil); !errors.Is(err, webhook.ErrDenied) {
		t.Fatalf("denied dial: %v", err)
	}
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	}))
	defer big.Close()
	c3 := webhook.NewClient(webhook.ClientOptions{MaxResponseBody: 1024, Timeout: 2 * time.Second})
	if st, err := c3.Post(context.Background(), big.URL, http.Header{}, nil); err != nil || st != http.StatusOK {
		t.Fatalf("big answer: %d %v", st, err)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("application/json", "devices_online", "s1", "0", "1700000000", "deadbeef", "s1:0", "v1,abc", []byte(`{}`))
	f.Fuzz(func(t *testing.T, ct, et, sub, seq, ts, sig, id, wsig string, body []byte) {
		h := http.Header{}
		for k, v := range map[string]string{"Content-Type": ct, webhook.HeaderEventType: et, webhook.HeaderSubscriptionID: sub,
			webhook.HeaderSequenceNumber: seq, webhook.HeaderEventTimestamp: ts, webhook.HeaderEventSignature: sig,
			webhook.HeaderWebhookID: id, webhook.HeaderWebhookTimestamp: ts, webhook.HeaderWebhookSignature: wsig} {
			h.Set(k, v)
		}
		if _, err := webhook.VerifyOCF(h, "0123456789abcdef0123456789abcdef", body); err == nil {
			t.Fatal("a forged OCF signature verified")
		}
		if err := webhook.VerifyStandard(h, webhook.StandardSecret("0123456789abcdef0123456789abcdef"), body, time.Now(), time.Hour); err == nil {
			t.Fatal("a forged Standard Webhooks signature verified")
		}
	})
}
