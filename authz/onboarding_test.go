package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/ocfcloud/ocfcloud/authz"
)

const (
	deviceA = "2b8b1e4a-7c1d-4f3e-9a6b-5d4c3b2a1f0e"
	deviceB = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
)

func TestPortalGetsOnboardingCode(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	resp := c.postOnboardingCode(c.mustLogin("admin", adminPassword, "").AccessToken)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var raw map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"apn", "cis", "cisSecure", "sid", "at", "cloudCA", "expiresAt"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("answer lacks %s", k)
		}
	}
	if len(raw) != 7 {
		t.Errorf("answer has %d fields: %v", len(raw), raw)
	}
	if raw["apn"] != "ocfcloud" || raw["cis"] != "coap+tcp://127.0.0.1:5683" || raw["cisSecure"] != "coaps+tcp://127.0.0.1:5684" ||
		raw["sid"] != "9f0a1e2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b" || !strings.HasPrefix(raw["cloudCA"], "-----BEGIN CERTIFICATE-----") {
		t.Errorf("answer %v", raw)
	}
	if len(raw["at"]) != 43 {
		t.Errorf("code %q is not 32 bytes of base64url", raw["at"])
	}
	exp, err := time.Parse(time.RFC3339, raw["expiresAt"])
	if err != nil || !exp.Equal(c.clock.Now().Add(10*time.Minute)) || !strings.HasSuffix(raw["expiresAt"], "Z") {
		t.Errorf("expiresAt %q (%v), now %v", raw["expiresAt"], err, c.clock.Now())
	}
	// Only the hash is stored.
	n, err := c.db.Collection("onboarding_codes").CountDocuments(context.Background(), bson.M{"_id": raw["at"]})
	if err != nil || n != 0 {
		t.Errorf("code stored in plaintext: %d %v", n, err)
	}
}

func TestOnboardingCodeExchangesOnceAndRetryGetsSameAnswer(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	code := c.newCode().AT

	first := c.exchangeCode(code, deviceA)
	if first.Status != http.StatusOK {
		t.Fatalf("first exchange: %d %s", first.Status, first.Body)
	}
	var answer map[string]any
	if err := json.Unmarshal(first.Body, &answer); err != nil {
		t.Fatal(err)
	}
	if len(answer) != 6 || answer["scope"] != "" || answer["token_type"] != "Bearer" || answer["expires_in"] != float64(3600) ||
		answer["refresh_token"] == "" || answer["user_id"] == "" {
		t.Fatalf("answer %s", first.Body)
	}
	claims := c.verify(first.AccessToken)
	if claims.DeviceID != deviceA || claims.ClientID != deviceClient || claims.Scope != "" || claims.Role != "" ||
		claims.Subject != first.UserID {
		t.Fatalf("device claims %+v", claims)
	}
	if raw := rawClaims(t, first.AccessToken); raw["scope"] != "" || raw["aud"] != "ocfcloud" {
		t.Errorf("raw claims %v", raw)
	}

	c.clock.Advance(2 * time.Second) // the device retries sign-up after 2 s
	retry := c.exchangeCode(code, deviceA)
	if retry.Status != http.StatusOK || !bytes.Equal(retry.Body, first.Body) {
		t.Fatalf("retry: %d %s\nfirst: %s", retry.Status, retry.Body, first.Body)
	}

	expectOAuthError(t, c.exchangeCode(code, deviceB), http.StatusBadRequest, "invalid_grant")

	c.clock.Advance(10 * time.Minute)
	expectOAuthError(t, c.exchangeCode(code, deviceA), http.StatusBadRequest, "invalid_grant")
}

func TestExpiredOnboardingCodeIsInvalidGrant(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	code := c.newCode().AT
	c.clock.Advance(10*time.Minute + time.Second)
	expectOAuthError(t, c.exchangeCode(code, deviceA), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.exchangeCode("made-up-code", deviceA), http.StatusBadRequest, "invalid_grant")
}

func TestOnboardingCodeNeedsDeviceUUID(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	code := c.newCode().AT
	expectOAuthError(t, c.exchangeCode(code, "not-a-uuid"), http.StatusBadRequest, "invalid_request")
	expectOAuthError(t, c.exchangeCode(code, ""), http.StatusBadRequest, "invalid_request")
	// The bad requests did not use the code up.
	if r := c.exchangeCode(code, deviceA); r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
}

func TestConcurrentCodeExchangeHasOneWinner(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	code := c.newCode().AT
	replies := exchangeConcurrently(t, []*cloud{c}, code, 20)
	expectOneWinner(t, replies)
}

// Two replicas behind a load balancer share the database; the conditional
// update alone must pick the winner.
func TestConcurrentCodeExchangeAcrossReplicasHasOneWinner(t *testing.T) {
	a := startCloud(t, nil, nil, nil)
	b := startCloud(t, a.db, a.clock, nil)
	code := a.newCode().AT
	replies := exchangeConcurrently(t, []*cloud{a, b}, code, 20)
	expectOneWinner(t, replies)
}

func exchangeConcurrently(t *testing.T, clouds []*cloud, code string, n int) []tokenReply {
	replies := make([]tokenReply, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			di := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			replies[i] = clouds[i%len(clouds)].exchangeCode(code, di)
		}()
	}
	close(start)
	wg.Wait()
	return replies
}

func expectOneWinner(t *testing.T, replies []tokenReply) {
	t.Helper()
	wins := 0
	for _, r := range replies {
		switch {
		case r.Status == http.StatusOK:
			wins++
		case r.Error != "invalid_grant":
			t.Errorf("loser got %d %s", r.Status, r.Body)
		}
	}
	if wins != 1 {
		t.Fatalf("%d winners", wins)
	}
}

// TestSignUpRetriedOnAnotherReplicaGetsTokens: a device whose sign-up was
// exchanged by replica a but never answered (the gateway answered 5.03)
// retries through replica b, which has no cached answer: it gets new
// tokens, not invalid_grant; another device still gets invalid_grant.
func TestSignUpRetriedOnAnotherReplicaGetsTokens(t *testing.T) {
	a := startCloud(t, nil, nil, nil)
	b := startCloud(t, a.db, a.clock, nil)
	code := a.newCode().AT
	first := a.exchangeCode(code, deviceA)
	if first.Status != http.StatusOK {
		t.Fatalf("first exchange: %d %s", first.Status, first.Body)
	}
	a.clock.Advance(2 * time.Second)
	retry := b.exchangeCode(code, deviceA)
	if retry.Status != http.StatusOK || retry.AccessToken == "" || retry.UserID != first.UserID {
		t.Fatalf("retry on the other replica: %d %s", retry.Status, retry.Body)
	}
	if claims := b.verify(retry.AccessToken); claims.DeviceID != deviceA {
		t.Fatalf("retry claims %+v", claims)
	}
	expectOAuthError(t, b.exchangeCode(code, deviceB), http.StatusBadRequest, "invalid_grant")
	a.clock.Advance(10 * time.Minute)
	expectOAuthError(t, b.exchangeCode(code, deviceA), http.StatusBadRequest, "invalid_grant")
}

func TestOnboardingCodeNeedsBearer(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	resp := c.postOnboardingCode("")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	resp = c.postOnboardingCode("garbage.token.here")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("bad token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestDeviceTokenCannotCreateOnboardingCodes(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	dev := c.exchangeCode(c.newCode().AT, deviceA)
	resp := c.postOnboardingCode(dev.AccessToken)
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("device token: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestExpiredOnboardingCodesAreSwept(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	c.newCode()
	c.clock.Advance(11 * time.Minute)
	c.newCode() // creating a code sweeps the expired ones
	n, err := c.db.Collection("onboarding_codes").CountDocuments(context.Background(), bson.M{})
	if err != nil || n != 1 {
		t.Fatalf("%d codes left (%v), want 1", n, err)
	}
}

// TestTokenEndpointAnswersAtOnceWhileTheDatabaseIsDown: while the database
// watcher reports it down, the grants that need it answer 503
// temporarily_unavailable with Retry-After without trying, and answer
// normally again once it is back.
func TestTokenEndpointAnswersAtOnceWhileTheDatabaseIsDown(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.DatabaseUp = up.Load })
	code := c.newCode().AT
	up.Store(false)
	for name, r := range map[string]tokenReply{
		"device code": c.exchangeCode(code, deviceA),
		"password":    c.login("admin", adminPassword, ""),
	} {
		if r.Status != http.StatusServiceUnavailable || r.Error != "temporarily_unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s while the database is down: %d %s, Retry-After %q", name, r.Status, r.Body, r.Header.Get("Retry-After"))
		}
	}
	up.Store(true)
	if r := c.exchangeCode(code, deviceA); r.Status != http.StatusOK {
		t.Fatalf("device code after the outage: %d %s (the code must not be spent by the refused exchange)", r.Status, r.Body)
	}
}

// TestManagementAPIAnswersAtOnceWhileTheDatabaseIsDown: the Bearer routes
// and revocation need the database too, and answer like the token endpoint
// while the watcher reports it down: 503 with Retry-After, in the
// protocol's own form, without touching the (reachable) database. The token
// is still checked first.
func TestManagementAPIAnswersAtOnceWhileTheDatabaseIsDown(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.DatabaseUp = up.Load })
	admin := c.adminToken()
	cli := c.mustLogin("admin", adminPassword, "")
	appsBefore := c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps", admin, nil)
	up.Store(false)
	for _, call := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/apps"},
		{http.MethodPost, "/api/v1/apps"},
		{http.MethodGet, "/api/v1/users"},
		{http.MethodGet, "/api/v1/audit"},
		{http.MethodPost, "/api/v1/onboarding-codes"},
		{http.MethodGet, "/userinfo"},
	} {
		r := c.api(call.method, call.path, admin, map[string]any{"name": "outage app", "type": "confidential"})
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || !strings.Contains(r.Header.Get("Content-Type"), "problem+json") {
			t.Errorf("%s %s while the database is down: %d %s (Retry-After %q)", call.method, call.path, r.Status, r.Body, r.Header.Get("Retry-After"))
		}
		if r := c.api(call.method, call.path, "", nil); r.Status != http.StatusUnauthorized {
			t.Errorf("%s %s without a token while the database is down: %d, want 401", call.method, call.path, r.Status)
		}
	}
	r := c.postForm("/oauth/revoke", url.Values{"token": {cli.AccessToken}}, cliClient, "")
	if r.Status != http.StatusServiceUnavailable || r.Error != "temporarily_unavailable" || r.Header.Get("Retry-After") == "" {
		t.Errorf("revocation while the database is down: %d %s", r.Status, r.Body)
	}
	c.verify(cli.AccessToken) // fails the test if the refused revocation revoked it
	up.Store(true)
	if r := c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps", admin, nil); string(r.Body) != string(appsBefore.Body) {
		t.Fatalf("apps changed during the outage: %s -> %s", appsBefore.Body, r.Body)
	}
	if r := c.postForm("/oauth/revoke", url.Values{"token": {cli.AccessToken}}, cliClient, ""); r.Status != http.StatusOK {
		t.Fatalf("revocation after the outage: %d %s", r.Status, r.Body)
	}
}
