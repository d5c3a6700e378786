package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// apiReply is a management API answer.
type apiReply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r apiReply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("answer %d %q: %v", r.Status, r.Body, err)
	}
}

// api calls the management API with a Bearer token and a JSON body (none
// when body is nil).
func (c *cloud) api(method, path, bearer string, body any) apiReply {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiReply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// mustAPI is api that fails the test unless the status is want.
func (c *cloud) mustAPI(want int, method, path, bearer string, body any) apiReply {
	c.t.Helper()
	r := c.api(method, path, bearer, body)
	if r.Status != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Body, want)
	}
	return r
}

func expectProblem(t *testing.T, r apiReply, status int, detailHas ...string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d %s, want %d", r.Status, r.Body, status)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	r.decode(t, &p)
	if p.Status != status || p.Title == "" {
		t.Errorf("problem %s", r.Body)
	}
	for _, s := range detailHas {
		if !strings.Contains(p.Detail, s) {
			t.Errorf("detail %q does not mention %q", p.Detail, s)
		}
	}
}

type appView struct {
	ID           string   `json:"id"`
	ClientID     string   `json:"clientId"`
	OwnerID      string   `json:"ownerId"`
	Name         string   `json:"name"`
	Notes        string   `json:"notes"`
	Type         string   `json:"type"`
	RedirectURIs []string `json:"redirectUris"`
	Scopes       []string `json:"scopes"`
	ClientSecret string   `json:"clientSecret"`
}

type userView struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Role     string `json:"role"`
	Disabled bool   `json:"disabled"`
}

// adminToken logs the admin in through the CLI client.
func (c *cloud) adminToken() string {
	c.t.Helper()
	return c.mustLogin("admin", adminPassword, "").AccessToken
}

// newUser has the admin create a user through the API and logs it in.
func (c *cloud) newUser(name string) (userView, string) {
	c.t.Helper()
	var u userView
	c.mustAPI(http.StatusCreated, http.MethodPost, "/api/v1/users", c.adminToken(),
		map[string]string{"username": name, "password": name + "-password", "role": "user"}).decode(c.t, &u)
	return u, c.mustLogin(name, name+"-password", "").AccessToken
}

func (c *cloud) newApp(bearer string, body map[string]any) appView {
	c.t.Helper()
	var a appView
	c.mustAPI(http.StatusCreated, http.MethodPost, "/api/v1/apps", bearer, body).decode(c.t, &a)
	return a
}

// clientCredentials asks for a token with client_secret_basic.
func (c *cloud) clientCredentials(id, secret, scope string) tokenReply {
	c.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return c.do(req)
}

// userinfoStatus calls a Bearer endpoint of authz, i.e. asks a resource
// server whether it still accepts the token.
func (c *cloud) userinfoStatus(token string) int {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestUserRegistersNativeAppAndScriptActsAsThem(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	alice, aliceTok := c.newUser("alice")
	app := c.newApp(aliceTok, map[string]any{"name": "nightly export", "type": "native", "notes": "runs on the build box"})
	if app.ClientID == "" || app.ClientID != app.ID || len(app.ClientSecret) < 40 || app.OwnerID != alice.ID {
		t.Fatalf("app %+v", app)
	}
	if strings.Join(app.Scopes, " ") != defaultScope {
		t.Errorf("default scopes %v", app.Scopes)
	}

	r := c.clientCredentials(app.ClientID, app.ClientSecret, "")
	if r.Status != http.StatusOK || r.RefreshToken != "" || r.Scope != defaultScope || r.ExpiresIn != 1800 {
		t.Fatalf("client credentials: %d %s", r.Status, r.Body)
	}
	claims := c.verify(r.AccessToken)
	if claims.Subject != alice.ID || claims.ClientID != app.ClientID || claims.Role != "user" {
		t.Fatalf("claims %+v", claims)
	}

	// client_secret_post works as well, with a narrower scope.
	r = c.postToken(url.Values{"grant_type": {"client_credentials"}, "client_id": {app.ClientID},
		"client_secret": {app.ClientSecret}, "scope": {"r:deviceinformation:*"}})
	if r.Status != http.StatusOK || r.Scope != "r:deviceinformation:*" {
		t.Fatalf("client_secret_post: %d %s", r.Status, r.Body)
	}

	// Only hashes and the sealed copy are stored.
	raw, err := c.db.Collection("apps").FindOne(context.Background(), bson.M{"_id": app.ID}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(app.ClientSecret)) {
		t.Fatal("the client secret is stored in plaintext")
	}
}

func TestClientAuthenticationFailures(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.newApp(c.adminToken(), map[string]any{"name": "script", "type": "native"})
	expectOAuthError(t, c.clientCredentials(app.ClientID, "wrong", ""), http.StatusUnauthorized, "invalid_client")
	expectOAuthError(t, c.clientCredentials(app.ClientID, "", ""), http.StatusUnauthorized, "invalid_client")
	expectOAuthError(t, c.clientCredentials("nobody", app.ClientSecret, ""), http.StatusUnauthorized, "invalid_client")
	expectOAuthError(t, c.clientCredentials(app.ClientID, app.ClientSecret, "offline_access"), http.StatusBadRequest, "invalid_scope")
	expectOAuthError(t, c.clientCredentials(app.ClientID, app.ClientSecret, "admin:all"), http.StatusBadRequest, "invalid_scope")
	// A native app has no password grant.
	expectOAuthError(t, c.postToken(url.Values{"grant_type": {"password"}, "client_id": {app.ClientID}, "client_secret": {app.ClientSecret},
		"username": {"admin"}, "password": {adminPassword}}), http.StatusBadRequest, "unauthorized_client")

	// Two authentication methods at once is an error (RFC 6749 §2.3).
	form := url.Values{"grant_type": {"client_credentials"}, "client_secret": {app.ClientSecret}}
	req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(app.ClientID, app.ClientSecret)
	expectOAuthError(t, c.do(req), http.StatusBadRequest, "invalid_request")
}

func TestWebAppUsesPasswordGrantAndGetsRefreshToken(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, bobTok := c.newUser("bob")
	app := c.newApp(bobTok, map[string]any{"name": "dashboard", "type": "web"})
	form := url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {"bob-password"}, "scope": {"offline_access"}}
	req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(app.ClientID, app.ClientSecret)
	r := c.do(req)
	if r.Status != http.StatusOK || r.RefreshToken == "" {
		t.Fatalf("password grant of a web app: %d %s", r.Status, r.Body)
	}
	if got := c.verify(r.AccessToken).ClientID; got != app.ClientID {
		t.Errorf("client_id %q", got)
	}
	r = c.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.RefreshToken},
		"client_id": {app.ClientID}, "client_secret": {app.ClientSecret}})
	if r.Status != http.StatusOK || r.RefreshToken == "" {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	// The refresh token is bound to the app.
	expectOAuthError(t, c.postToken(refreshForm(cliClient, r.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
}

func TestSPAIsAPublicClientAuthenticatedByIDAlone(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.newApp(c.adminToken(), map[string]any{"name": "portal", "type": "spa", "redirectUris": []string{"http://localhost:3000/cb"}})
	if app.ClientSecret != "" {
		t.Fatal("a spa app got a secret")
	}
	// Basic with only the client id (seed 004) authenticates a public client;
	// the grant then fails on the unknown token, not on the client.
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"unknown"}}
	req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(app.ClientID, "")
	expectOAuthError(t, c.do(req), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {app.ClientID}, "client_secret": {"x"}}),
		http.StatusUnauthorized, "invalid_client")
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps/"+app.ID+"/secret/reveal", c.adminToken(), nil), http.StatusConflict)
}

func TestAppRegistrationsAreValidated(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	tok := c.adminToken()
	r := c.api(http.MethodPost, "/api/v1/apps", tok, map[string]any{
		"name": "", "type": "daemon",
		"redirectUris": []string{"http://example.com/cb", "https://ok.example/cb#frag", "/relative", "https://user:pw@ok.example/"},
		"scopes":       []string{"admin:all"},
	})
	expectProblem(t, r, http.StatusBadRequest, "name", "type", "http is allowed only", "fragment", "absolute", "user info", "admin:all")
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps", tok, map[string]any{"name": "n", "type": "native", "scopes": []string{"offline_access"}}),
		http.StatusBadRequest, "offline_access")
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps", tok, map[string]any{"name": "n", "type": "spa"}), http.StatusBadRequest, "redirect URI")
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps", tok, map[string]any{"name": "n", "type": "web", "extra": 1}), http.StatusBadRequest)
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps", "", map[string]any{"name": "n", "type": "web"}), http.StatusUnauthorized)
	c.newApp(tok, map[string]any{"name": "loopback", "type": "web",
		"redirectUris": []string{"http://127.0.0.1:8765/callback", "http://[::1]/cb", "https://app.example.com/oauth/callback?x=1"}})
}

func TestAppNamesAreUniquePerUser(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, alice := c.newUser("alice")
	_, bob := c.newUser("bob")
	c.newApp(alice, map[string]any{"name": "script", "type": "native"})
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps", alice, map[string]any{"name": "script", "type": "web"}), http.StatusConflict)
	other := c.newApp(alice, map[string]any{"name": "other", "type": "native"})
	c.newApp(bob, map[string]any{"name": "script", "type": "native"})
	expectProblem(t, c.api(http.MethodPatch, "/api/v1/apps/"+other.ID, alice, map[string]any{"name": "script"}), http.StatusConflict)
}

func TestOwnerManagesAppAndOthersCannotSeeIt(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, alice := c.newUser("alice")
	_, bob := c.newUser("bob")
	app := c.newApp(alice, map[string]any{"name": "dashboard", "type": "web", "notes": "v1"})

	var list []appView
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps", alice, nil).decode(t, &list)
	if len(list) != 1 || list[0].ID != app.ID || list[0].ClientSecret != "" {
		t.Fatalf("list %+v", list)
	}
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps", bob, nil).decode(t, &list)
	if len(list) != 0 {
		t.Fatalf("bob sees %+v", list)
	}
	expectProblem(t, c.api(http.MethodGet, "/api/v1/apps/"+app.ID, bob, nil), http.StatusNotFound)
	expectProblem(t, c.api(http.MethodDelete, "/api/v1/apps/"+app.ID, bob, nil), http.StatusNotFound)
	expectProblem(t, c.api(http.MethodGet, "/api/v1/apps?all=true", bob, nil), http.StatusForbidden)
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps?all=true", c.adminToken(), nil).decode(t, &list)
	if len(list) != 1 {
		t.Fatalf("admin sees %d apps", len(list))
	}

	var got appView
	c.mustAPI(http.StatusOK, http.MethodPatch, "/api/v1/apps/"+app.ID, alice, map[string]any{
		"notes": "v2", "redirectUris": []string{"https://dash.example/cb"}, "scopes": []string{"r:deviceinformation:*"},
	}).decode(t, &got)
	if got.Notes != "v2" || len(got.RedirectURIs) != 1 || strings.Join(got.Scopes, " ") != "r:deviceinformation:* openid offline_access" || got.Name != "dashboard" {
		t.Fatalf("updated %+v", got)
	}
	expectProblem(t, c.api(http.MethodPatch, "/api/v1/apps/"+app.ID, alice, map[string]any{"type": "native"}), http.StatusBadRequest, "type")
	// The new allowed scopes count at the token endpoint at once.
	form := url.Values{"grant_type": {"password"}, "client_id": {app.ClientID}, "client_secret": {app.ClientSecret},
		"username": {"alice"}, "password": {"alice-password"}, "scope": {"w:resources:*"}}
	expectOAuthError(t, c.postToken(form), http.StatusBadRequest, "invalid_scope")

	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/apps/"+app.ID, c.adminToken(), nil)
	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+app.ID, alice, nil)
	expectProblem(t, c.api(http.MethodGet, "/api/v1/apps/"+app.ID, alice, nil), http.StatusNotFound)
}

func TestOwnerRevealsAndRotatesSecret(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, alice := c.newUser("alice")
	app := c.newApp(alice, map[string]any{"name": "script", "type": "native"})
	var sec struct{ ClientID, ClientSecret string }
	c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/apps/"+app.ID+"/secret/reveal", alice, nil).decode(t, &sec)
	if sec.ClientSecret != app.ClientSecret || sec.ClientID != app.ClientID {
		t.Fatalf("revealed %+v", sec)
	}
	// Only the owner may reveal, not even an administrator.
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps/"+app.ID+"/secret/reveal", c.adminToken(), nil), http.StatusNotFound)

	old := c.clientCredentials(app.ClientID, app.ClientSecret, "")
	if old.Status != http.StatusOK || c.userinfoStatus(old.AccessToken) != http.StatusOK {
		t.Fatalf("token before rotation: %d %s", old.Status, old.Body)
	}
	c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/apps/"+app.ID+"/secret/rotate", alice, nil).decode(t, &sec)
	if sec.ClientSecret == app.ClientSecret || sec.ClientSecret == "" {
		t.Fatal("rotation kept the secret")
	}
	expectOAuthError(t, c.clientCredentials(app.ClientID, app.ClientSecret, ""), http.StatusUnauthorized, "invalid_client")
	if got := c.userinfoStatus(old.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("a token issued before the rotation answers %d", got)
	}
	// The clock stands still: a token issued in the rotation's second works.
	fresh := c.clientCredentials(app.ClientID, sec.ClientSecret, "")
	if fresh.Status != http.StatusOK || c.userinfoStatus(fresh.AccessToken) != http.StatusOK {
		t.Fatalf("token after rotation: %d %s", fresh.Status, fresh.Body)
	}
}

func TestDeletingAppRevokesEveryToken(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, bob := c.newUser("bob")
	app := c.newApp(bob, map[string]any{"name": "dashboard", "type": "web"})
	r := c.postToken(url.Values{"grant_type": {"password"}, "client_id": {app.ClientID}, "client_secret": {app.ClientSecret},
		"username": {"bob"}, "password": {"bob-password"}, "scope": {"offline_access"}})
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+app.ID, bob, nil)
	if got := c.userinfoStatus(r.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("access token of a deleted app answers %d", got)
	}
	n, err := c.db.Collection("refresh_tokens").CountDocuments(context.Background(), bson.M{"client_id": app.ClientID})
	if err != nil || n != 0 {
		t.Errorf("%d refresh tokens of the deleted app remain (%v)", n, err)
	}
	expectOAuthError(t, c.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.RefreshToken},
		"client_id": {app.ClientID}, "client_secret": {app.ClientSecret}}), http.StatusUnauthorized, "invalid_client")
}

func TestManagementAPINeedsFirstPartyUserTokens(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.newApp(c.adminToken(), map[string]any{"name": "script", "type": "native"})
	appTok := c.clientCredentials(app.ClientID, app.ClientSecret, "").AccessToken
	expectProblem(t, c.api(http.MethodGet, "/api/v1/apps", appTok, nil), http.StatusForbidden)
	expectProblem(t, c.api(http.MethodPost, "/api/v1/apps/"+app.ID+"/secret/reveal", appTok, nil), http.StatusForbidden)
	expectProblem(t, c.api(http.MethodGet, "/api/v1/users", appTok, nil), http.StatusForbidden)
	dev := c.exchangeCode(c.newCode().AT, deviceA)
	expectProblem(t, c.api(http.MethodGet, "/api/v1/apps", dev.AccessToken, nil), http.StatusForbidden)
}

func TestAdminManagesUsers(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	admin := c.adminToken()
	carol, carolTok := c.newUser("carol")
	if carol.Role != "user" || carol.Disabled || carol.Username != "carol" {
		t.Fatalf("created %+v", carol)
	}
	expectProblem(t, c.api(http.MethodPost, "/api/v1/users", carolTok, map[string]string{"username": "eve", "password": "eve-password"}), http.StatusForbidden)
	expectProblem(t, c.api(http.MethodGet, "/api/v1/users", carolTok, nil), http.StatusForbidden)
	expectProblem(t, c.api(http.MethodPost, "/api/v1/users", admin, map[string]string{"username": "carol", "password": "carol-password"}), http.StatusConflict)
	expectProblem(t, c.api(http.MethodPost, "/api/v1/users", admin, map[string]string{"username": "x", "password": "short", "role": "root"}), http.StatusBadRequest, "password", "role")
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/users/"+carol.ID, carolTok, nil)

	var users []userView
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/users", admin, nil).decode(t, &users)
	if len(users) != 2 {
		t.Fatalf("users %+v", users)
	}

	// Her native app stops working with her.
	app := c.newApp(carolTok, map[string]any{"name": "script", "type": "native"})
	appTok := c.clientCredentials(app.ClientID, app.ClientSecret, "").AccessToken

	var u userView
	c.mustAPI(http.StatusOK, http.MethodPatch, "/api/v1/users/"+carol.ID, admin, map[string]any{"disabled": true}).decode(t, &u)
	if !u.Disabled {
		t.Fatalf("after disable %+v", u)
	}
	for name, tok := range map[string]string{"login": carolTok, "app": appTok} {
		if got := c.userinfoStatus(tok); got != http.StatusUnauthorized {
			t.Errorf("%s token of a disabled user answers %d", name, got)
		}
	}
	expectOAuthError(t, c.login("carol", "carol-password", ""), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.clientCredentials(app.ClientID, app.ClientSecret, ""), http.StatusBadRequest, "invalid_grant")

	c.mustAPI(http.StatusOK, http.MethodPatch, "/api/v1/users/"+carol.ID, admin, map[string]any{"disabled": false, "role": "admin"}).decode(t, &u)
	if u.Disabled || u.Role != "admin" {
		t.Fatalf("after enable %+v", u)
	}
	if claims := c.verify(c.mustLogin("carol", "carol-password", "").AccessToken); !claims.IsAdmin() {
		t.Errorf("promoted carol's claims %+v", claims)
	}
	var adminID string
	for _, x := range users {
		if x.Username == "admin" {
			adminID = x.ID
		}
	}
	expectProblem(t, c.api(http.MethodPatch, "/api/v1/users/"+adminID, admin, map[string]any{"disabled": true}), http.StatusBadRequest, "themselves")
}

func TestAuditLogRecordsLoginsGrantsAndAppChanges(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	admin := c.adminToken()
	_, dave := c.newUser("dave")
	expectOAuthError(t, c.login("dave", "wrong-password", ""), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.login("mallory", "wrong-password", ""), http.StatusBadRequest, "invalid_grant")
	app := c.newApp(dave, map[string]any{"name": "script", "type": "native"})
	for range 3 {
		c.clientCredentials(app.ClientID, app.ClientSecret, "")
	}
	c.clientCredentials(app.ClientID, "wrong", "")
	c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/apps/"+app.ID+"/secret/rotate", dave, nil)
	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+app.ID, dave, nil)

	expectProblem(t, c.api(http.MethodGet, "/api/v1/audit", dave, nil), http.StatusForbidden)
	var events []struct {
		ID, Type, UserID, ClientID, SourceIP, Detail string
		Success                                      bool
		Count                                        int
	}
	c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/audit", admin, nil).decode(t, &events)
	count := map[string]int{}
	for _, e := range events {
		count[e.Type] += e.Count
		if strings.Contains(e.Detail, "wrong-password") || strings.Contains(e.Detail, "mallory") {
			t.Errorf("audit event keeps what was typed: %+v", e)
		}
	}
	for typ, want := range map[string]int{
		"login": 3, "login_failed": 2, "user_created": 1, "app_created": 1, "client_auth_failed": 1,
		"app_secret_rotated": 1, "app_deleted": 1, "revocation": 2,
	} {
		if count[typ] != want {
			t.Errorf("%d %s events, want %d", count[typ], typ, want)
		}
	}
	if count["grant"] < 6 {
		t.Errorf("%d grant events", count["grant"])
	}
	for i := 1; i < len(events); i++ {
		if events[i-1].ID < events[i].ID {
			t.Fatal("events are not newest first")
		}
	}

	var page, second []struct{ ID string }
	r := c.mustAPI(http.StatusOK, http.MethodGet, "/api/v1/audit?limit=2", admin, nil)
	r.decode(t, &page)
	link := r.Header.Get("Link")
	if len(page) != 2 || !strings.Contains(link, `rel="next"`) {
		t.Fatalf("page %v link %q", page, link)
	}
	next := link[strings.Index(link, "<")+1 : strings.Index(link, ">")]
	c.mustAPI(http.StatusOK, http.MethodGet, strings.TrimPrefix(next, c.url), admin, nil).decode(t, &second)
	if len(second) != 2 || second[0].ID >= page[1].ID {
		t.Fatalf("second page %v after %v", second, page)
	}
}

func TestRotatingTheClientIDRevokesEverything(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, mia := c.newUser("mia")
	app := c.newApp(mia, map[string]any{"name": "script", "type": "native", "notes": "keep me"})
	old := c.clientCredentials(app.ClientID, app.ClientSecret, "")
	var next appView
	c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/apps/"+app.ID+"/client-id/rotate", mia, nil).decode(t, &next)
	if next.ClientID == app.ClientID || next.Notes != "keep me" || next.Name != "script" {
		t.Fatalf("rotated %+v", next)
	}
	if got := c.userinfoStatus(old.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("token of the old client id answers %d", got)
	}
	expectOAuthError(t, c.clientCredentials(app.ClientID, app.ClientSecret, ""), http.StatusUnauthorized, "invalid_client")
	// The secret stays and works with the new id, also for reveal.
	fresh := c.clientCredentials(next.ClientID, app.ClientSecret, "")
	if fresh.Status != http.StatusOK || c.userinfoStatus(fresh.AccessToken) != http.StatusOK {
		t.Fatalf("new client id: %d %s", fresh.Status, fresh.Body)
	}
	var sec struct{ ClientSecret string }
	c.mustAPI(http.StatusOK, http.MethodPost, "/api/v1/apps/"+next.ID+"/secret/reveal", mia, nil).decode(t, &sec)
	if sec.ClientSecret != app.ClientSecret {
		t.Error("reveal after client id rotation")
	}
	expectProblem(t, c.api(http.MethodGet, "/api/v1/apps/"+app.ID, mia, nil), http.StatusNotFound)
}
