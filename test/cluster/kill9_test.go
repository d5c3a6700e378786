//go:build cluster

package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

var signInLine = regexp.MustCompile(`msg="device signed in".* device_id=([0-9a-f-]+)`)

// TestKill9OfTheAllInOneServer kills `ocfcloud serve` with SIGKILL while a
// fleet of simulated devices keeps changing resources, and starts it again
// on the same data dir: every device that was told it is registered and
// published is still registered with its links and twin, and every device
// reconnects and signs in again on its own.
func TestKill9OfTheAllInOneServer(t *testing.T) {
	const devices = 100
	tp := &topology{t: t, dir: t.ArtifactDir(), procs: map[string]*proc{}}
	data := t.TempDir()
	base := "http://127.0.0.11:8080"
	serve := func(name string) *proc {
		p := tp.start(name, "serve", "--data-dir", filepath.Join(data, "cloud"), "--http-addr", "127.0.0.11:8080",
			"--coap-addr", "127.0.0.11:5683", "--coaps-addr", "-", "--admin-password", "kill9-admin", "--lease-ttl", "3s")
		waitFor(t, name+" ready", 60*time.Second, func() bool { return ready(base) })
		return p
	}
	first := serve("serve-1")
	tp.start("fleet", "device-sim", "--count", fmt.Sprint(devices), "--api-url", base, "--username", "admin",
		"--password", "kill9-admin", "--change-every", "500ms", "--ping-interval", "2s", "--log-level", "warn")

	token := func() string {
		resp, err := http.PostForm(base+"/oauth/token", url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {"kill9-admin"}})
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return tok.AccessToken
	}
	a := &api{t: t, base: base, token: token()}
	type page struct {
		TotalCount int `json:"TotalCount"`
		Value      []struct {
			Device struct{ DI string } `json:"device"`
			Links  []struct {
				Href string          `json:"href"`
				Rep  json.RawMessage `json:"rep"`
			} `json:"links"`
		} `json:"value"`
	}
	count := func(filter string) int {
		st, body := a.call(http.MethodGet, "/api/v1/devices?$count=true&$top=0&$filter="+url.QueryEscape(filter), "")
		var p page
		if st != http.StatusOK || json.Unmarshal([]byte(body), &p) != nil {
			return -1
		}
		return p.TotalCount
	}
	waitFor(t, fmt.Sprintf("%d devices online", devices), 120*time.Second, func() bool { return count("online eq true") == devices })

	first.kill() // SIGKILL under load
	serve("serve-2")
	a.token = token() // the signing key is durable; a new token is just convenient
	waitFor(t, "every device registered after the restart", 30*time.Second, func() bool { return count("") == devices })
	// Online state from before the crash is not trusted: every device must
	// sign in again through the new gateway instance by itself.
	waitFor(t, "every device signed in again on its own", 120*time.Second, func() bool {
		log, _ := os.ReadFile(filepath.Join(tp.dir, "serve-2.log"))
		signedIn := map[string]bool{}
		for _, m := range signInLine.FindAllSubmatch(log, -1) {
			signedIn[string(m[1])] = true
		}
		return len(signedIn) == devices && count("online eq true") == devices
	})
	st, body := a.call(http.MethodGet, "/api/v1/devices?$top=100&content=all", "")
	if st != http.StatusOK {
		t.Fatalf("list: %d %s", st, body)
	}
	var all []struct {
		Device struct{ DI string } `json:"device"`
		Links  []struct {
			Href string          `json:"href"`
			Rep  json.RawMessage `json:"rep"`
		} `json:"links"`
	}
	if err := json.Unmarshal([]byte(body), &all); err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if len(d.Links) != 3 {
			t.Errorf("device %s has %d links after the restart", d.Device.DI, len(d.Links))
		}
		for _, l := range d.Links {
			if len(l.Rep) == 0 {
				t.Errorf("device %s: no twin content for %s", d.Device.DI, l.Href)
			}
		}
	}
}
