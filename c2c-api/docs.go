package c2capi

import (
	_ "embed"
	"net/http"

	"github.com/swaggest/swgui/v5emb"
)

//go:embed openapi.json
var openAPIDocument []byte

// registerDocs serves the OpenAPI document and the API help browser. Both
// are public: they describe the API, they do not expose data. The browser's
// assets are embedded, so it works without internet access.
func registerDocs(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPIDocument)
	})
	help := v5emb.New("ocfcloud C2C API", "/api/v1/openapi.json", "/api/v1/help/")
	mux.Handle("GET /api/v1/help/", help)
	mux.Handle("GET /api/v1/help", http.RedirectHandler("/api/v1/help/", http.StatusMovedPermanently))
}
