package portal

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var assets embed.FS

// ClientID is the built-in public OAuth client of the portal.
const ClientID = "ocfcloud-portal"

// Config is what the browser needs to know, served as /portal/config.json.
type Config struct {
	// Issuer is authz's issuer URL; the portal signs in there.
	Issuer string `json:"issuer"`
	// ClientID is the OAuth client of the portal; default ClientID.
	ClientID string `json:"clientId"`
	// Scopes the portal asks for.
	Scopes string `json:"scopes"`
	// CAFingerprint and HTTPSFingerprint are SHA-256 fingerprints that
	// scripts talking to a self-signed server can pin (seed 000).
	CAFingerprint    string `json:"caFingerprint,omitempty"`
	HTTPSFingerprint string `json:"httpsFingerprint,omitempty"`
}

// DefaultScopes is every API scope plus a refresh token and an ID token.
const DefaultScopes = "openid offline_access r:deviceinformation:* r:resources:* w:resources:* w:subscriptions:*"

// Register serves the app at / and its assets under /portal/.
func Register(mux *http.ServeMux, cfg Config) {
	if cfg.ClientID == "" {
		cfg.ClientID = ClientID
	}
	if cfg.Scopes == "" {
		cfg.Scopes = DefaultScopes
	}
	static, _ := fs.Sub(assets, "static")
	files := http.FileServerFS(static)
	index, _ := fs.ReadFile(static, "index.html")
	conf, _ := json.Marshal(cfg)

	mux.Handle("GET /{$}", secured(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(index)
	})))
	mux.Handle("GET /portal/config.json", secured(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(conf)
	})))
	mux.Handle("GET /portal/", secured(http.StripPrefix("/portal", files)))
}

// secured adds the headers that keep the app from being framed, sniffed or
// made to load anything from elsewhere.
func secured(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if strings.HasSuffix(r.URL.Path, ".js") || strings.HasSuffix(r.URL.Path, ".css") {
			h.Set("Cache-Control", "no-cache")
		}
		next.ServeHTTP(w, r)
	})
}
