package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ocfcloud/ocfcloud/authz"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// natsConn connects to a fresh embedded nats-server.
func natsConn(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(platform.TestNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// resourceServer is the verifier another process (c2c-api, the gateway)
// would run: its own NATS connection and the shared database.
func (c *cloud) resourceServer(nc *nats.Conn) *auth.Verifier {
	v := auth.NewVerifier(context.Background(), c.url, c.url+"/.well-known/jwks.json", c.clock.Now, auth.WithRevocations(nc, c.db))
	c.t.Cleanup(v.Close)
	return v
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func expectRevokedBy(t *testing.T, v *auth.Verifier, token, what string) {
	t.Helper()
	eventually(t, what, func() bool {
		_, err := v.Verify(context.Background(), token)
		return errors.Is(err, auth.ErrRevoked)
	})
}

func (c *cloud) postForm(path string, form url.Values, basicID, basicSecret string) tokenReply {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := tokenReply{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if len(body) > 0 {
		_ = json.Unmarshal(body, &r)
	}
	return r
}

func TestRevokedAccessTokenIsRejectedByEveryResourceServer(t *testing.T) {
	nc := natsConn(t)
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.NATS = nc })
	other := c.resourceServer(natsConn2(t, nc))
	tok := c.mustLogin("admin", adminPassword, "").AccessToken
	keep := c.mustLogin("admin", adminPassword, "").AccessToken
	if _, err := other.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}

	// Seed 004: Basic with the client id alone, the token as access_token.
	r := c.postForm("/oauth/revoke", url.Values{"access_token": {tok}}, cliClient, "")
	if r.Status != http.StatusOK || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if got := c.userinfoStatus(tok); got != http.StatusUnauthorized {
		t.Errorf("authz still accepts the revoked token: %d", got)
	}
	expectRevokedBy(t, other, tok, "the other resource server rejects the token")
	if _, err := other.Verify(context.Background(), keep); err != nil {
		t.Errorf("another token of the same user was revoked too: %v", err)
	}

	// A resource server that starts later loads the revocation from MongoDB.
	restarted := c.resourceServer(nil)
	if _, err := restarted.Verify(context.Background(), tok); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("after a restart: %v", err)
	}
	// Revoking again, or revoking garbage, is fine (RFC 7009 §2.2).
	for _, tk := range []string{tok, "garbage", "a.b.c"} {
		if r := c.postForm("/oauth/revoke", url.Values{"token": {tk}}, cliClient, ""); r.Status != http.StatusOK {
			t.Errorf("revoke %q: %d %s", tk, r.Status, r.Body)
		}
	}
}

// natsConn2 is a second connection to the server of nc, as another process
// would have.
func natsConn2(t *testing.T, nc *nats.Conn) *nats.Conn {
	t.Helper()
	nc2, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc2.Close)
	return nc2
}

func TestRevokeChecksTheClient(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.newApp(c.adminToken(), map[string]any{"name": "script", "type": "native"})
	cliTok := c.mustLogin("admin", adminPassword, "offline_access")
	expectOAuthError(t, c.postForm("/oauth/revoke", url.Values{"token": {cliTok.AccessToken}}, app.ClientID, app.ClientSecret),
		http.StatusBadRequest, "unauthorized_client")
	expectOAuthError(t, c.postForm("/oauth/revoke", url.Values{"token": {cliTok.RefreshToken}}, app.ClientID, app.ClientSecret),
		http.StatusBadRequest, "unauthorized_client")
	expectOAuthError(t, c.postForm("/oauth/revoke", url.Values{"token": {cliTok.AccessToken}}, app.ClientID, "wrong"),
		http.StatusUnauthorized, "invalid_client")
	expectOAuthError(t, c.postForm("/oauth/revoke", url.Values{}, cliClient, ""), http.StatusBadRequest, "invalid_request")
	if got := c.userinfoStatus(cliTok.AccessToken); got != http.StatusOK {
		t.Fatalf("a refused revocation revoked: %d", got)
	}

	// The owner revokes its refresh token; refreshing then fails.
	if r := c.postForm("/oauth/revoke", url.Values{"token": {cliTok.RefreshToken}, "token_type_hint": {"refresh_token"}}, cliClient, ""); r.Status != http.StatusOK {
		t.Fatalf("revoke refresh token: %d %s", r.Status, r.Body)
	}
	expectOAuthError(t, c.postToken(refreshForm(cliClient, cliTok.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
}

func TestIntrospectionAnswersConfidentialClients(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	admin := c.adminToken()
	app := c.newApp(admin, map[string]any{"name": "script", "type": "native"})
	_, bob := c.newUser("bob")
	bobApp := c.newApp(bob, map[string]any{"name": "bobs", "type": "native"})
	tok := c.clientCredentials(app.ClientID, app.ClientSecret, "r:resources:*").AccessToken

	var got map[string]any
	r := c.postForm("/oauth/introspect", url.Values{"token": {tok}}, app.ClientID, app.ClientSecret)
	if r.Status != http.StatusOK {
		t.Fatalf("introspect: %d %s", r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got["active"] != true || got["scope"] != "r:resources:*" || got["client_id"] != app.ClientID || got["token_type"] != "Bearer" ||
		got["iss"] != c.url || got["jti"] == "" || got["exp"] == nil {
		t.Fatalf("introspection %v", got)
	}
	// The app's owner's other tokens are visible to it; bob's app sees nothing.
	if !active(t, c.postForm("/oauth/introspect", url.Values{"token": {admin}}, app.ClientID, app.ClientSecret)) {
		t.Error("owner's token is not active for the owner's app")
	}
	if active(t, c.postForm("/oauth/introspect", url.Values{"token": {tok}}, bobApp.ClientID, bobApp.ClientSecret)) {
		t.Error("another user's app learns about the token")
	}
	expectOAuthError(t, c.postForm("/oauth/introspect", url.Values{"token": {tok}}, cliClient, ""), http.StatusUnauthorized, "invalid_client")

	c.postForm("/oauth/revoke", url.Values{"token": {tok}}, app.ClientID, app.ClientSecret)
	if active(t, c.postForm("/oauth/introspect", url.Values{"token": {tok}}, app.ClientID, app.ClientSecret)) {
		t.Error("a revoked token is active")
	}
	if active(t, c.postForm("/oauth/introspect", url.Values{"token": {"nonsense"}}, app.ClientID, app.ClientSecret)) {
		t.Error("nonsense is active")
	}
}

func active(t *testing.T, r tokenReply) bool {
	t.Helper()
	var got struct {
		Active *bool `json:"active"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &got) != nil || got.Active == nil {
		t.Fatalf("introspection answer %d %s", r.Status, r.Body)
	}
	return *got.Active
}

func TestDeletedAppAndDisabledUserAreRejectedByOtherResourceServers(t *testing.T) {
	nc := natsConn(t)
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.NATS = nc })
	other := c.resourceServer(natsConn2(t, nc))
	admin := c.adminToken()
	erin, erinTok := c.newUser("erin")
	app := c.newApp(admin, map[string]any{"name": "script", "type": "native"})
	appTok := c.clientCredentials(app.ClientID, app.ClientSecret, "").AccessToken
	for _, tk := range []string{appTok, erinTok} {
		if _, err := other.Verify(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
	}
	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+app.ID, admin, nil)
	expectRevokedBy(t, other, appTok, "token of a deleted app")
	c.mustAPI(http.StatusOK, http.MethodPatch, "/api/v1/users/"+erin.ID, admin, map[string]any{"disabled": true})
	expectRevokedBy(t, other, erinTok, "token of a disabled user")
	if _, err := other.Verify(context.Background(), admin); err != nil {
		t.Errorf("the admin's token was revoked too: %v", err)
	}
}
