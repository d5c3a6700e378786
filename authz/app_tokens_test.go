package authz_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/ocfcloud/ocfcloud/authz"
	"github.com/ocfcloud/ocfcloud/internal/auth"
)

type appTokenView struct {
	ID         string     `json:"id"`
	ClientID   string     `json:"clientId"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  time.Time  `json:"expiresAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	Expired    bool       `json:"expired"`
	Token      string     `json:"token"`
}

// c2cLike is a resource server on its own HTTP listener, as c2c-api is.
func c2cLike(t *testing.T, v *auth.Verifier) string {
	t.Helper()
	srv := httptest.NewServer(v.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}), auth.ScopeReadDeviceInformation))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/v1/devices"
}

func callWith(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (c *cloud) newAppToken(bearer, appID string, expires time.Time) appTokenView {
	c.t.Helper()
	var tv appTokenView
	c.mustAPI(http.StatusCreated, http.MethodPost, "/api/v1/apps/"+appID+"/tokens", bearer,
		map[string]any{"expiresAt": expires.Format(time.RFC3339)}).decode(c.t, &tv)
	return tv
}

func TestAdminIssuedTokenWorksEverywhereUntilRevoked(t *testing.T) {
	nc := natsConn(t)
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.NATS = nc })
	rs := c.resourceServer(natsConn2(t, nc))
	rsURL := c2cLike(t, rs)
	admin := c.adminToken()
	_, frank := c.newUser("frank")
	app := c.newApp(frank, map[string]any{"name": "partner feed", "type": "native", "notes": "for ACME"})

	// The administrator issues a token for frank's app (seed 001).
	tv := c.newAppToken(admin, app.ID, c.clock.Now().Add(90*24*time.Hour))
	if !strings.HasPrefix(tv.Token, "ocfat_") || tv.ID == "" || tv.ClientID != app.ClientID || tv.LastUsedAt != nil || tv.Expired {
		t.Fatalf("token %+v", tv)
	}
	raw, err := c.db.Collection("app_tokens").FindOne(context.Background(), bson.M{"_id": tv.ID}).Raw()
	if err != nil || bytes.Contains(raw, []byte(tv.Token)) {
		t.Fatalf("stored in plaintext or missing: %v", err)
	}

	if got := c.userinfoStatus(tv.Token); got != http.StatusOK {
		t.Fatalf("authz refuses the token: %d", got)
	}
	eventually(t, "the other resource server accepts the new token", func() bool { return callWith(t, rsURL, tv.Token) == http.StatusOK })
	if got := callWith(t, c2cLike(t, c.resourceServer(nil)), tv.Token); got != http.StatusOK {
		t.Fatalf("a resource server started later refuses it: %d", got)
	}
	claims, err := rs.Verify(context.Background(), tv.Token)
	if err != nil || claims.ClientID != app.ClientID || claims.Subject != app.OwnerID || !claims.HasScope(auth.ScopeWriteResources) {
		t.Fatalf("claims %+v %v", claims, err)
	}

	// The list shows when it was last used; the owner sees it too.
	c.clock.Advance(time.Minute)
	var list []appTokenView
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps/"+app.ID+"/tokens", frank, nil).decode(t, &list)
	if len(list) != 1 || list[0].Token != "" || list[0].LastUsedAt == nil || list[0].ExpiresAt.IsZero() || list[0].CreatedAt.IsZero() {
		t.Fatalf("list %+v", list)
	}

	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+app.ID+"/tokens/"+tv.ID, admin, nil)
	if got := c.userinfoStatus(tv.Token); got != http.StatusUnauthorized {
		t.Errorf("authz accepts a revoked token: %d", got)
	}
	eventually(t, "the other resource server rejects the revoked token", func() bool { return callWith(t, rsURL, tv.Token) == http.StatusUnauthorized })
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps/"+app.ID+"/tokens", frank, nil).decode(t, &list)
	if len(list) != 0 {
		t.Errorf("revoked token still listed: %+v", list)
	}
}

func TestExpiredAdminIssuedTokenIsRejectedAndAudited(t *testing.T) {
	for _, withNATS := range []bool{false, true} {
		name := map[bool]string{false: "reported in process", true: "reported over NATS"}[withNATS]
		t.Run(name, func(t *testing.T) {
			edit := func(*authz.Config) {}
			var rsURL string
			if withNATS {
				nc := natsConn(t)
				edit = func(cfg *authz.Config) { cfg.NATS = nc }
				c := startCloud(t, nil, nil, edit)
				rsURL = c2cLike(t, c.resourceServer(natsConn2(t, nc)))
				expiredUseIsAudited(t, c, rsURL)
				return
			}
			c := startCloud(t, nil, nil, edit)
			expiredUseIsAudited(t, c, c.url+"/userinfo")
		})
	}
}

func expiredUseIsAudited(t *testing.T, c *cloud, rsURL string) {
	admin := c.adminToken()
	app := c.newApp(admin, map[string]any{"name": "short lived", "type": "native"})
	tv := c.newAppToken(admin, app.ID, c.clock.Now().Add(time.Hour))
	eventually(t, "token accepted", func() bool { return callWith(t, rsURL, tv.Token) == http.StatusOK })
	c.clock.Advance(time.Hour)
	if got := callWith(t, rsURL, tv.Token); got != http.StatusUnauthorized {
		t.Fatalf("expired token answers %d", got)
	}
	admin = c.adminToken()
	var list []appTokenView
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps/"+app.ID+"/tokens", admin, nil).decode(t, &list)
	if len(list) != 1 || !list[0].Expired {
		t.Fatalf("list %+v", list)
	}
	eventually(t, "the expired use is in the audit log", func() bool {
		var events []struct{ Type, ClientID, TokenID, SourceIP string }
		c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/audit?type=app_token_expired_use", admin, nil).decode(t, &events)
		return len(events) == 1 && events[0].ClientID == app.ClientID && events[0].TokenID == tv.ID && events[0].SourceIP == "127.0.0.1"
	})
}

func TestAppChangesRevokeAdminIssuedTokens(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	admin := c.adminToken()
	gina, ginaTok := c.newUser("gina")
	exp := c.clock.Now().Add(365 * 24 * time.Hour)

	rotated := c.newApp(ginaTok, map[string]any{"name": "rotated", "type": "native"})
	t1 := c.newAppToken(ginaTok, rotated.ID, exp)
	c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/apps/"+rotated.ID+"/secret/rotate", ginaTok, nil)
	t2 := c.newAppToken(ginaTok, rotated.ID, exp) // issued in the same second: works
	deleted := c.newApp(ginaTok, map[string]any{"name": "deleted", "type": "web"})
	t3 := c.newAppToken(ginaTok, deleted.ID, exp)
	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+deleted.ID, ginaTok, nil)
	for name, tc := range map[string]struct {
		tok  string
		want int
	}{"before rotation": {t1.Token, 401}, "after rotation": {t2.Token, 200}, "deleted app": {t3.Token, 401}} {
		if got := c.userinfoStatus(tc.tok); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}

	// Disabling the owner ends her tokens for good: enabling her again does
	// not bring them back, even after the user-wide cutoff is forgotten.
	c.mustAPI(http.StatusOK, http.MethodPatch, "/api/v1/users/"+gina.ID, admin, map[string]any{"disabled": true})
	c.mustAPI(http.StatusOK, http.MethodPatch, "/api/v1/users/"+gina.ID, admin, map[string]any{"disabled": false})
	c.clock.Advance(3 * time.Hour)
	if got := c.userinfoStatus(t2.Token); got != http.StatusUnauthorized {
		t.Errorf("token of a once disabled owner answers %d", got)
	}
}

func TestAppTokenRequestsAreValidated(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	admin := c.adminToken()
	_, hank := c.newUser("hank")
	app := c.newApp(admin, map[string]any{"name": "x", "type": "native", "scopes": []string{"r:deviceinformation:*"}})
	path := "/api/v1/apps/" + app.ID + "/tokens"
	now := c.clock.Now()
	expectProblem(t, c.api(http.MethodPost, path, admin, map[string]any{}), http.StatusBadRequest, "expiresAt")
	expectProblem(t, c.api(http.MethodPost, path, admin, map[string]any{"expiresAt": now.Add(-time.Minute)}), http.StatusBadRequest, "future")
	expectProblem(t, c.api(http.MethodPost, path, admin, map[string]any{"expiresAt": now.Add(10 * 365 * 24 * time.Hour)}), http.StatusBadRequest, "5 years")
	expectProblem(t, c.api(http.MethodPost, path, admin, map[string]any{"expiresAt": now.Add(time.Hour), "scopes": []string{"w:resources:*"}}), http.StatusBadRequest, "w:resources:*")
	expectProblem(t, c.api(http.MethodPost, path, hank, map[string]any{"expiresAt": now.Add(time.Hour)}), http.StatusNotFound)
	expectProblem(t, c.api(http.MethodGet, path, hank, nil), http.StatusNotFound)
	if got := c.userinfoStatus("ocfat_" + strings.Repeat("A", 43)); got != http.StatusUnauthorized {
		t.Errorf("an unknown opaque token answers %d", got)
	}
}

func TestAppRevokesAndIntrospectsItsAdminIssuedToken(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	admin := c.adminToken()
	app := c.newApp(admin, map[string]any{"name": "partner", "type": "web"})
	tv := c.newAppToken(admin, app.ID, c.clock.Now().Add(time.Hour))
	if !active(t, c.postForm("/oauth/introspect", url.Values{"token": {tv.Token}}, app.ClientID, app.ClientSecret)) {
		t.Fatal("admin-issued token is not active")
	}
	// Seed 004: the app revokes it with the access_token field.
	if r := c.postForm("/oauth/revoke", url.Values{"access_token": {tv.Token}}, app.ClientID, app.ClientSecret); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if got := c.userinfoStatus(tv.Token); got != http.StatusUnauthorized {
		t.Errorf("revoked admin-issued token answers %d", got)
	}
	if active(t, c.postForm("/oauth/introspect", url.Values{"token": {tv.Token}}, app.ClientID, app.ClientSecret)) {
		t.Error("revoked admin-issued token is active")
	}
}
