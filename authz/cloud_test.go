package authz_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	ocfcloud "github.com/ocfcloud/ocfcloud/internal/cloud"
)

// TestWholeCloudRejectsRevokedTokensAtTheC2CAPI runs the real assembly (the
// same cloud.New as `ocfcloud serve`) and checks that c2c-api, a resource
// server of its own, rejects revoked tokens on the next call.
func TestWholeCloudRejectsRevokedTokensAtTheC2CAPI(t *testing.T) {
	cl, err := ocfcloud.New(context.Background(), ocfcloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "-", CoAPSAddr: "-",
		AdminPassword: adminPassword, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	c := &cloud{t: t, url: "http://" + cl.HTTPAddr(), clock: &clock{t: time.Now()}}
	devices := c.url + "/api/v1/devices"
	admin := c.adminToken()
	if got := callWith(t, devices, admin); got != http.StatusOK {
		t.Fatalf("c2c-api with a fresh token: %d", got)
	}

	app := c.newApp(admin, map[string]any{"name": "script", "type": "native"})
	appTok := c.clientCredentials(app.ClientID, app.ClientSecret, "").AccessToken
	var tv appTokenView
	c.mustAPI(http.StatusCreated, http.MethodPost, "/api/v1/apps/"+app.ID+"/tokens", admin,
		map[string]any{"expiresAt": time.Now().Add(time.Hour).Format(time.RFC3339)}).decode(t, &tv)
	for name, tok := range map[string]string{"app token": appTok, "admin-issued token": tv.Token} {
		if got := callWith(t, devices, tok); got != http.StatusOK {
			t.Fatalf("%s before: %d", name, got)
		}
	}

	victim := c.mustLogin("admin", adminPassword, "").AccessToken
	if r := c.postForm("/oauth/revoke", url.Values{"token": {victim}}, cliClient, ""); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d", r.Status)
	}
	c.mustAPI(http.StatusNoContent, http.MethodDelete, "/api/v1/apps/"+app.ID, admin, nil)
	for name, tok := range map[string]string{"revoked token": victim, "token of a deleted app": appTok, "admin-issued token of a deleted app": tv.Token} {
		eventually(t, "c2c-api rejects the "+name, func() bool { return callWith(t, devices, tok) == http.StatusUnauthorized })
	}
	if got := callWith(t, devices, admin); got != http.StatusOK {
		t.Fatalf("an unrelated token stopped working: %d", got)
	}
}
