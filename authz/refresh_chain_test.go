package authz_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/ocfcloud/ocfcloud/authz"
)

func TestReusedRefreshTokenRevokesTheWholeChain(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	first := c.mustLogin("admin", adminPassword, "offline_access")
	second := c.postToken(refreshForm(cliClient, first.RefreshToken, ""))
	if second.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", second.Status, second.Body)
	}
	other := c.mustLogin("admin", adminPassword, "offline_access") // another chain

	c.clock.Advance(11 * time.Second) // past the default grace window
	// An attacker replays the rotated token: refused, and the chain dies.
	expectOAuthError(t, c.postToken(refreshForm(cliClient, first.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.postToken(refreshForm(cliClient, second.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	if got := c.userinfoStatus(second.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("the chain's access token answers %d", got)
	}
	if r := c.postToken(refreshForm(cliClient, other.RefreshToken, "")); r.Status != http.StatusOK {
		t.Errorf("another chain of the same user was revoked: %d %s", r.Status, r.Body)
	}
	var events []struct{ Type string }
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/audit?type=refresh_token_reuse", c.adminToken(), nil).decode(t, &events)
	if len(events) != 1 {
		t.Errorf("%d reuse events in the audit log", len(events))
	}
}

func TestRetryWithinGraceWindowKeepsTheChain(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	first := c.mustLogin("admin", adminPassword, "offline_access")
	second := c.postToken(refreshForm(cliClient, first.RefreshToken, ""))
	c.clock.Advance(9 * time.Second)
	expectOAuthError(t, c.postToken(refreshForm(cliClient, first.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	if r := c.postToken(refreshForm(cliClient, second.RefreshToken, "")); r.Status != http.StatusOK {
		t.Fatalf("a retry within the grace window revoked the chain: %d %s", r.Status, r.Body)
	}
}

func TestGraceWindowIsConfigurable(t *testing.T) {
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.RefreshReuseGrace = -1 })
	first := c.mustLogin("admin", adminPassword, "offline_access")
	second := c.postToken(refreshForm(cliClient, first.RefreshToken, ""))
	expectOAuthError(t, c.postToken(refreshForm(cliClient, first.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.postToken(refreshForm(cliClient, second.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
}

func TestRefreshTokenNeedsOfflineAccessAndTheSameClient(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	if r := c.mustLogin("admin", adminPassword, ""); r.RefreshToken != "" {
		t.Fatal("a refresh token without offline_access")
	}
	app := c.newApp(c.adminToken(), map[string]any{"name": "web", "type": "web"})
	rt := c.mustLogin("admin", adminPassword, "offline_access").RefreshToken
	expectOAuthError(t, c.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {app.ClientID}, "client_secret": {app.ClientSecret}}), http.StatusBadRequest, "invalid_grant")
	// A wider scope than granted is refused (RFC 6749 §6).
	expectOAuthError(t, c.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {cliClient},
		"scope": {"openid"}}), http.StatusBadRequest, "invalid_scope")
}

func TestRefreshTokenLimitsDropTheOldest(t *testing.T) {
	c := startCloud(t, nil, nil, func(cfg *authz.Config) {
		cfg.RefreshLimitPerClient = 2
		cfg.RefreshLimitPerUser = 3
	})
	app := c.newApp(c.adminToken(), map[string]any{"name": "web", "type": "web"})
	webLogin := func() string {
		r := c.postToken(url.Values{"grant_type": {"password"}, "client_id": {app.ClientID}, "client_secret": {app.ClientSecret},
			"username": {"admin"}, "password": {adminPassword}, "scope": {"offline_access"}})
		if r.Status != http.StatusOK {
			t.Fatalf("web login: %d %s", r.Status, r.Body)
		}
		return r.RefreshToken
	}
	works := func(client, secret, rt string) (string, bool) {
		f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {client}}
		if secret != "" {
			f.Set("client_secret", secret)
		}
		r := c.postToken(f)
		return r.RefreshToken, r.Status == http.StatusOK
	}
	cli := make([]string, 3)
	for i := range cli {
		cli[i] = c.mustLogin("admin", adminPassword, "offline_access").RefreshToken
		c.clock.Advance(time.Second)
	}
	// Per client and user: the third CLI login dropped the first.
	if _, ok := works(cliClient, "", cli[0]); ok {
		t.Error("the oldest CLI refresh token survived the per-client limit")
	}
	var ok bool
	if cli[1], ok = works(cliClient, "", cli[1]); !ok {
		t.Fatal("the second CLI refresh token was dropped")
	}
	// Rotation does not start a chain, so it counts nothing.
	if cli[1], ok = works(cliClient, "", cli[1]); !ok {
		t.Fatal("rotating counted against the limit")
	}
	// Per user across clients: CLI 2 + web 2 = 4 > 3, so the oldest chain
	// (the second CLI login) goes.
	web1 := webLogin()
	c.clock.Advance(time.Second)
	web2 := webLogin()
	if _, ok := works(cliClient, "", cli[1]); ok {
		t.Error("the oldest chain survived the per-user limit")
	}
	for i, rt := range []string{cli[2]} {
		if _, ok := works(cliClient, "", rt); !ok {
			t.Errorf("CLI token %d dropped", i+2)
		}
	}
	for i, rt := range []string{web1, web2} {
		if _, ok := works(app.ClientID, app.ClientSecret, rt); !ok {
			t.Errorf("web token %d dropped", i+1)
		}
	}
}

func TestDeviceRefreshTokensAreNotLimited(t *testing.T) {
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.RefreshLimitPerClient, cfg.RefreshLimitPerUser = 1, 1 })
	devices := []string{deviceA, deviceB}
	tokens := make([]string, len(devices))
	for i, di := range devices {
		tokens[i] = c.exchangeCode(c.newCode().AT, di).RefreshToken
	}
	for i, di := range devices {
		if r := c.postToken(refreshForm(deviceClient, tokens[i], di)); r.Status != http.StatusOK {
			t.Errorf("device %d: %d %s", i, r.Status, r.Body)
		}
	}
}

func TestHundredConcurrentRefreshesHaveOneWinner(t *testing.T) {
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.TokenRateIP, cfg.TokenRateClient = -1, -1 })
	tok := c.mustLogin("admin", adminPassword, "offline_access").RefreshToken
	const n = 100
	replies := make([]tokenReply, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			replies[i] = c.postToken(refreshForm(cliClient, tok, ""))
		}()
	}
	close(start)
	wg.Wait()
	expectOneWinner(t, replies)
	// The losers were within the grace window: the winner's chain lives.
	for _, r := range replies {
		if r.Status == http.StatusOK {
			if next := c.postToken(refreshForm(cliClient, r.RefreshToken, "")); next.Status != http.StatusOK {
				t.Fatalf("the winner's token: %d %s", next.Status, next.Body)
			}
		}
	}
}

func TestRefreshTokensFromBeforeChainsGetTheirOwnChain(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	userID := c.mustLogin("admin", adminPassword, "").UserID
	legacy := func(raw string) {
		sum := sha256.Sum256([]byte(raw))
		if _, err := c.db.Collection("refresh_tokens").InsertOne(context.Background(), bson.M{
			"_id": hex.EncodeToString(sum[:]), "user_id": userID, "client_id": cliClient, "device_id": "",
			"scope": defaultScope + " offline_access", "created_at": c.clock.Now(), "expires_at": c.clock.Now().Add(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
	}
	legacy("legacy-one")
	legacy("legacy-two")
	one := c.postToken(refreshForm(cliClient, "legacy-one", ""))
	two := c.postToken(refreshForm(cliClient, "legacy-two", ""))
	if one.Status != http.StatusOK || two.Status != http.StatusOK {
		t.Fatalf("legacy refresh: %d %d", one.Status, two.Status)
	}
	c.clock.Advance(time.Minute)
	// Replaying the first one's old token kills its chain only.
	expectOAuthError(t, c.postToken(refreshForm(cliClient, "legacy-one", "")), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.postToken(refreshForm(cliClient, one.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	if r := c.postToken(refreshForm(cliClient, two.RefreshToken, "")); r.Status != http.StatusOK {
		t.Fatalf("the other migrated chain died too: %d %s", r.Status, r.Body)
	}
}
