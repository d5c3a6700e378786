package authz_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/authz"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

const (
	adminPassword = "correct horse battery staple"
	cliClient     = "ocfcloud-cli"
	deviceClient  = "ocfcloud-device"
	defaultScope  = "r:deviceinformation:* r:resources:* w:resources:* w:subscriptions:*"
)

func TestMain(m *testing.M) {
	// Production argon2id costs ~50 ms a login, far more under -race; the
	// hash format and its checks are tested in password_test.go.
	authz.UseCheapPasswordHashing()
	os.Exit(m.Run())
}

// clock is the injected time source; tests move it instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// cloud is one authz server on a real listener and a real FerretDB.
type cloud struct {
	t     *testing.T
	db    *mongo.Database
	srv   *authz.Server
	url   string
	clock *clock
}

// startCloud starts authz on db (a fresh database when nil), sharing c's
// clock when c is given.
func startCloud(t *testing.T, db *mongo.Database, clk *clock, edit func(*authz.Config)) *cloud {
	t.Helper()
	if db == nil {
		db = platform.TestMongo(t)
	}
	if clk == nil {
		clk = &clock{t: time.Now().Truncate(time.Second)}
	}
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	cfg := authz.Config{
		Issuer:        ts.URL,
		AdminPassword: adminPassword,
		Now:           clk.Now,
		Onboarding: authz.OnboardingInfo{
			CIS:        "coap+tcp://127.0.0.1:5683",
			CISSecure:  "coaps+tcp://127.0.0.1:5684",
			CloudID:    "9f0a1e2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
			CloudCAPEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		},
	}
	if os.Getenv("AUTHZ_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := authz.New(context.Background(), cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.Register(mux)
	return &cloud{t: t, db: db, srv: srv, url: ts.URL, clock: clk}
}

// tokenReply is a token endpoint answer, success or error.
type tokenReply struct {
	Status int
	Header http.Header
	Body   []byte

	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	Scope            string `json:"scope"`
	UserID           string `json:"user_id"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func (c *cloud) postToken(form url.Values) tokenReply {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

func (c *cloud) do(req *http.Request) tokenReply {
	c.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	r := tokenReply{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if err := json.Unmarshal(body, &r); err != nil {
		c.t.Fatalf("token endpoint answered %d with non-JSON %q", resp.StatusCode, body)
	}
	return r
}

func (c *cloud) login(username, password, scope string) tokenReply {
	c.t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {cliClient}, "username": {username}, "password": {password}}
	if scope != "" {
		form.Set("scope", scope)
	}
	return c.postToken(form)
}

// mustLogin returns a successful password grant.
func (c *cloud) mustLogin(username, password, scope string) tokenReply {
	c.t.Helper()
	r := c.login(username, password, scope)
	if r.Status != http.StatusOK {
		c.t.Fatalf("login %s: %d %s", username, r.Status, r.Body)
	}
	return r
}

type onboarding struct {
	APN       string `json:"apn"`
	CIS       string `json:"cis"`
	CISSecure string `json:"cisSecure"`
	SID       string `json:"sid"`
	AT        string `json:"at"`
	CloudCA   string `json:"cloudCA"`
	ExpiresAt string `json:"expiresAt"`
}

// postOnboardingCode calls the portal endpoint with bearer (none when "").
func (c *cloud) postOnboardingCode(bearer string) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url+"/api/v1/onboarding-codes", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// newCode returns a fresh onboarding code of the admin.
func (c *cloud) newCode() onboarding {
	c.t.Helper()
	resp := c.postOnboardingCode(c.mustLogin("admin", adminPassword, "").AccessToken)
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("create onboarding code: %d %s", resp.StatusCode, b)
	}
	var ob onboarding
	if err := json.NewDecoder(resp.Body).Decode(&ob); err != nil {
		c.t.Fatal(err)
	}
	return ob
}

func (c *cloud) exchangeCode(code, deviceID string) tokenReply {
	c.t.Helper()
	return c.postToken(url.Values{
		"grant_type": {"authorization_code"}, "client_id": {deviceClient},
		"code": {code}, "device_id": {deviceID},
	})
}

func (c *cloud) verifier() *auth.Verifier {
	return auth.NewVerifier(context.Background(), c.url, c.url+"/.well-known/jwks.json", c.clock.Now)
}

func (c *cloud) verify(token string) *auth.Claims {
	c.t.Helper()
	claims, err := c.verifier().Verify(context.Background(), token)
	if err != nil {
		c.t.Fatalf("verify access token: %v", err)
	}
	return claims
}

func expectOAuthError(t *testing.T, r tokenReply, status int, code string) {
	t.Helper()
	if r.Status != status || r.Error != code {
		t.Fatalf("got %d %s, want %d with error %q", r.Status, r.Body, status, code)
	}
	if r.ErrorDescription == "" {
		t.Errorf("error %s has no error_description", code)
	}
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}
