package portal

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAppAndAssetsAreServedWithLockedDownHeaders(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux, Config{Issuer: "https://cloud.example", CAFingerprint: "AB:CD"})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<script type="module" src="/portal/app.js">`) {
		t.Fatalf("index: %d %.200s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	for _, asset := range []string{"/portal/app.js", "/portal/app.css"} {
		if resp, body := get(asset); resp.StatusCode != http.StatusOK || len(body) < 100 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d", asset, resp.StatusCode)
		}
	}
	resp, body = get("/portal/config.json")
	var cfg Config
	if err := json.Unmarshal([]byte(body), &cfg); err != nil || cfg.Issuer != "https://cloud.example" || cfg.ClientID != ClientID || !strings.Contains(cfg.Scopes, "offline_access") || cfg.CAFingerprint != "AB:CD" {
		t.Fatalf("config %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/portal/../go.mod"); resp.StatusCode == http.StatusOK {
		t.Fatal("path outside the assets served")
	}
	if resp, _ := get("/nothing-here"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}
