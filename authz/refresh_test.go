package authz_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func refreshForm(client, token, deviceID string) url.Values {
	f := url.Values{"grant_type": {"refresh_token"}, "client_id": {client}, "refresh_token": {token}}
	if deviceID != "" {
		f.Set("device_id", deviceID)
	}
	return f
}

func TestRefreshTokenRotates(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	first := c.mustLogin("admin", adminPassword, "offline_access")
	if first.RefreshToken == "" || first.Scope != defaultScope+" offline_access" {
		t.Fatalf("login with offline_access: %s", first.Body)
	}

	second := c.postToken(refreshForm(cliClient, first.RefreshToken, ""))
	if second.Status != http.StatusOK || second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh: %d %s", second.Status, second.Body)
	}
	if second.Scope != first.Scope {
		t.Errorf("scope %q, want %q", second.Scope, first.Scope)
	}
	if claims := c.verify(second.AccessToken); !claims.IsAdmin() || claims.Subject != first.UserID {
		t.Errorf("claims %+v", claims)
	}

	expectOAuthError(t, c.postToken(refreshForm(cliClient, first.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	if r := c.postToken(refreshForm(cliClient, second.RefreshToken, "")); r.Status != http.StatusOK {
		t.Fatalf("new refresh token: %d %s", r.Status, r.Body)
	}
}

func TestUserRefreshTokenSlidesAndExpires(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	tok := c.mustLogin("admin", adminPassword, "offline_access").RefreshToken
	c.clock.Advance(50 * time.Minute)
	r := c.postToken(refreshForm(cliClient, tok, ""))
	if r.Status != http.StatusOK {
		t.Fatalf("refresh within the hour: %d %s", r.Status, r.Body)
	}
	c.clock.Advance(50 * time.Minute) // 100 min after login, 50 after the last refresh
	r = c.postToken(refreshForm(cliClient, r.RefreshToken, ""))
	if r.Status != http.StatusOK {
		t.Fatalf("sliding refresh: %d %s", r.Status, r.Body)
	}
	c.clock.Advance(time.Hour)
	expectOAuthError(t, c.postToken(refreshForm(cliClient, r.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
}

func TestDeviceRefreshTokenNeverExpiresAndIsBoundToDevice(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	signUp := c.exchangeCode(c.newCode().AT, deviceA)
	c.clock.Advance(365 * 24 * time.Hour)
	c.newCode() // runs the expiry sweep, which must leave device tokens alone

	expectOAuthError(t, c.postToken(refreshForm(deviceClient, signUp.RefreshToken, deviceB)), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.postToken(refreshForm(cliClient, signUp.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
	expectOAuthError(t, c.postToken(refreshForm(deviceClient, signUp.RefreshToken, "")), http.StatusBadRequest, "invalid_request")

	r := c.postToken(refreshForm(deviceClient, signUp.RefreshToken, deviceA))
	if r.Status != http.StatusOK || r.Scope != "" || r.UserID != signUp.UserID {
		t.Fatalf("device refresh: %d %s", r.Status, r.Body)
	}
	claims := c.verify(r.AccessToken)
	if claims.DeviceID != deviceA || claims.ClientID != deviceClient || claims.Role != "" {
		t.Fatalf("claims %+v", claims)
	}
	expectOAuthError(t, c.postToken(refreshForm(deviceClient, signUp.RefreshToken, deviceA)), http.StatusBadRequest, "invalid_grant")
}
