package authz

import (
	"errors"
	"net/http"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

type userinfoResponse struct {
	Subject           string `json:"sub"`
	PreferredUsername string `json:"preferred_username"`
	Role              string `json:"role"`
}

// handleUserinfo runs behind the Bearer middleware.
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := auth.FromContext(ctx)
	if c == nil {
		httpx.WriteProblem(w, http.StatusUnauthorized, "a Bearer token is required")
		return
	}
	u, err := s.activeUser(ctx, c.Subject)
	if errors.Is(err, errUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="the user is disabled or deleted"`)
		httpx.WriteProblem(w, http.StatusUnauthorized, "the user is disabled or deleted")
		return
	}
	if err != nil {
		s.problemInternal(w, r, "userinfo", err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, userinfoResponse{Subject: u.ID, PreferredUsername: u.Username, Role: u.Role})
}
