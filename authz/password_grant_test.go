package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/ocfcloud/ocfcloud/authz"
	"github.com/ocfcloud/ocfcloud/internal/auth"
)

func TestAdminGetsAccessTokenWithPasswordGrant(t *testing.T) {
	c := startCloud(t, nil, nil, nil)

	r := c.mustLogin("admin", adminPassword, "")
	if r.TokenType != "Bearer" || r.ExpiresIn != 1800 || r.Scope != defaultScope {
		t.Fatalf("answer %s", r.Body)
	}
	if r.RefreshToken != "" {
		t.Error("a refresh token without offline_access")
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.Header.Get("Cache-Control"))
	}

	claims := c.verify(r.AccessToken)
	if !claims.IsAdmin() || claims.ClientID != cliClient || claims.DeviceID != "" || claims.Issuer != c.url {
		t.Fatalf("claims %+v", claims)
	}
	for _, s := range []string{auth.ScopeReadDeviceInformation, auth.ScopeReadResources, auth.ScopeWriteResources, auth.ScopeWriteSubscriptions} {
		if !claims.HasScope(s) {
			t.Errorf("token lacks %s", s)
		}
	}
	if claims.Subject != r.UserID || claims.ID == "" {
		t.Errorf("sub %q user_id %q jti %q", claims.Subject, r.UserID, claims.ID)
	}
	if got := claims.ExpiresAt.Sub(claims.IssuedAt); got.Minutes() != 30 {
		t.Errorf("lifetime %s", got)
	}
	raw := rawClaims(t, r.AccessToken)
	if raw["aud"] != "ocfcloud" {
		t.Errorf("aud = %v", raw["aud"])
	}
}

func TestUserLogsInWithBasicClientAuthAndNarrowScope(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	if _, err := c.srv.CreateUser(context.Background(), "alice", "alice-password", "user"); err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-password"},
		"scope": {"r:resources:* r:deviceinformation:*"}}
	req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.SetBasicAuth(cliClient, "")
	r := c.do(req)
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if r.Scope != "r:deviceinformation:* r:resources:*" {
		t.Errorf("scope %q", r.Scope)
	}
	claims := c.verify(r.AccessToken)
	if claims.Role != "user" || claims.HasScope(auth.ScopeWriteResources) {
		t.Errorf("claims %+v", claims)
	}
}

func TestWrongPasswordIsInvalidGrant(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	expectOAuthError(t, c.login("admin", "not the password", ""), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.login("nobody", adminPassword, ""), http.StatusBadRequest, "invalid_grant")
}

func TestDisabledUserIsInvalidGrant(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	if _, err := c.srv.CreateUser(context.Background(), "bob", "bob-password", "user"); err != nil {
		t.Fatal(err)
	}
	c.mustLogin("bob", "bob-password", "")
	if _, err := c.db.Collection("users").UpdateOne(context.Background(),
		bson.M{"username": "bob"}, bson.M{"$set": bson.M{"disabled": true}}); err != nil {
		t.Fatal(err)
	}
	expectOAuthError(t, c.login("bob", "bob-password", ""), http.StatusBadRequest, "invalid_grant")
}

func TestUnknownScopeIsInvalidScope(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	expectOAuthError(t, c.login("admin", adminPassword, "r:resources:* admin:everything"), http.StatusBadRequest, "invalid_scope")
}

func TestTokenEndpointRejectsMalformedRequests(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	login := url.Values{"grant_type": {"password"}, "username": {"admin"}, "password": {adminPassword}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for key, vals := range login {
			f[key] = vals
		}
		f.Set(k, v)
		return f
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"no client", login, http.StatusUnauthorized, "invalid_client"},
		{"unknown client", with("client_id", "someone"), http.StatusUnauthorized, "invalid_client"},
		{"client secret", with("client_secret", "x"), http.StatusUnauthorized, "invalid_client"},
		{"device client with password", with("client_id", deviceClient), http.StatusBadRequest, "unauthorized_client"},
		{"unsupported grant", url.Values{"grant_type": {"implicit"}, "client_id": {cliClient}}, http.StatusBadRequest, "unsupported_grant_type"},
		{"grant not for this client", url.Values{"grant_type": {"client_credentials"}, "client_id": {cliClient}}, http.StatusBadRequest, "unauthorized_client"},
		{"missing grant", url.Values{"client_id": {cliClient}}, http.StatusBadRequest, "invalid_request"},
		{"missing password", url.Values{"grant_type": {"password"}, "client_id": {cliClient}, "username": {"admin"}}, http.StatusBadRequest, "invalid_request"},
		{"repeated parameter", url.Values{"grant_type": {"password"}, "client_id": {cliClient, cliClient}}, http.StatusBadRequest, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectOAuthError(t, c.postToken(tc.form), tc.status, tc.code)
		})
	}

	t.Run("JSON body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(`{"grant_type":"password"}`))
		req.Header.Set("Content-Type", "application/json")
		expectOAuthError(t, c.do(req), http.StatusBadRequest, "invalid_request")
	})
	t.Run("Basic with a secret", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, c.url+"/oauth/token", strings.NewReader(login.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(cliClient, "secret")
		r := c.do(req)
		expectOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
	})
}

func TestCreateUserRefusesTakenUsername(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	ctx := context.Background()
	if _, err := c.srv.CreateUser(ctx, "carol", "carol-password", "user"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.srv.CreateUser(ctx, "carol", "other-password", "user"); !errors.Is(err, authz.ErrUserExists) {
		t.Fatalf("second carol: %v", err)
	}
	if _, err := c.srv.CreateUser(ctx, "dave", "short", "root"); err == nil {
		t.Fatal("short password and unknown role accepted")
	}
}

func TestUserinfoNamesTheUser(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	tok := c.mustLogin("admin", adminPassword, "")
	req, _ := http.NewRequest(http.MethodGet, c.url+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if got["sub"] != tok.UserID || got["preferred_username"] != "admin" || got["role"] != "admin" {
		t.Fatalf("userinfo %v", got)
	}
}

func rawClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
