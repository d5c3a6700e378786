package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
)

// TestHTTPSWithTheDevCertificate serves the API over HTTPS with a certificate
// from the dev CA; a client that trusts the CA signs in and reads devices,
// and the services' own calls (JWKS) go over HTTPS too.
func TestHTTPSWithTheDevCertificate(t *testing.T) {
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "-", CoAPSAddr: "-", HTTPTLS: true,
		AdminPassword: adminPassword, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.HasPrefix(c.PublicURL(), "https://") {
		t.Fatalf("public URL %s", c.PublicURL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Certs.CAPool()}}}
	resp, err := hc.PostForm(c.PublicURL()+"/oauth/token", url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {adminPassword}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, c.PublicURL()+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("devices over HTTPS: %d", resp.StatusCode)
	}
	// A client that does not trust the dev CA is refused by TLS itself.
	if _, err := http.Get(c.PublicURL() + "/healthz"); err == nil {
		t.Fatal("an untrusting client connected")
	}
}
