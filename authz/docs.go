package authz

import (
	_ "embed"
	"net/http"
)

// openAPIDocument describes the management API and the OAuth endpoints.
//
//go:embed openapi.json
var openAPIDocument []byte

const openAPIPath = "/api/v1/authz/openapi.json"

func handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDocument)
}
