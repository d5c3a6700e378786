package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// TestDatabaseOutageIsSurvivedWithoutRestart stops the database under a
// running cloud and starts it again on the same files: readiness goes false
// and true again, reads keep being served from memory, sign-in is refused
// with 503 meanwhile, and everything works again without a restart.
func TestDatabaseOutageIsSurvivedWithoutRestart(t *testing.T) {
	dbDir := t.TempDir()
	addr := unusedAddr(t)
	startDB := func() *platform.Ferret {
		f, err := platform.StartFerretOn(addr, dbDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	db := startDB()
	defer func() { db.Shutdown() }()
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "-", CoAPSAddr: "-",
		MongoURI: db.URI(), AdminPassword: adminPassword, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	grant := func() *http.Response {
		form := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {adminPassword}}
		resp, err := http.Post(base+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	db.Shutdown() // the database goes away
	waitFor(t, "readiness false", 15*time.Second, func() bool { return readyz(base) == http.StatusServiceUnavailable })
	if resp, _ := api.do(http.MethodGet, "/api/v1/devices", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("device list from memory during the outage: %d", resp.StatusCode)
	}
	if resp := grant(); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("password grant during the outage: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	db = startDB() // and comes back on the same files
	waitFor(t, "readiness true again", 30*time.Second, func() bool { return readyz(base) == http.StatusOK })
	waitFor(t, "sign-in works again", 30*time.Second, func() bool { return grant().StatusCode == http.StatusOK })
}
