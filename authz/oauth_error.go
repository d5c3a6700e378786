package authz

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// oauthError is an RFC 6749 §5.2 error answer. Token endpoint handlers return
// it as a value and writeOAuthError is the only code that writes one.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  time.Duration // >0 adds Retry-After
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func invalidRequest(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: desc}
}

func invalidClient(desc string) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_client", description: desc}
}

func invalidGrant(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_grant", description: desc}
}

func invalidScope(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_scope", description: desc}
}

func unauthorizedClient(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "unauthorized_client", description: desc}
}

func unsupportedGrantType(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type", description: desc}
}

func serverError() *oauthError {
	return &oauthError{status: http.StatusInternalServerError, code: "server_error", description: "internal error, try again later"}
}

func slowDown(after time.Duration) *oauthError {
	return &oauthError{
		status: http.StatusTooManyRequests, code: "temporarily_unavailable",
		description: "too many requests, slow down", retryAfter: after,
	}
}

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	h := w.Header()
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="ocfcloud"`)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.code, e.description})
	writeTokenJSON(w, e.status, body)
}

// writeTokenJSON writes a token endpoint answer; RFC 6749 §5.1 forbids caching.
func writeTokenJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
