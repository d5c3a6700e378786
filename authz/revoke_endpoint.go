package authz

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

const (
	revokePath     = "/oauth/revoke"
	introspectPath = "/oauth/introspect"
)

// presentedToken is the token parameter of revocation and introspection;
// clients of seed 004 send it as access_token.
func presentedToken(req tokenRequest) (string, *oauthError) {
	tok := req.form.Get("token")
	if tok == "" {
		tok = req.form.Get("access_token")
	}
	if tok == "" {
		return "", invalidRequest("token is required")
	}
	return tok, nil
}

func looksLikeJWT(tok string) bool { return strings.Count(tok, ".") == 2 }

// isAccessToken: a JWT or an admin-issued opaque token, which the verifier
// knows; anything else may be a refresh token.
func isAccessToken(tok string) bool {
	return looksLikeJWT(tok) || strings.HasPrefix(tok, auth.OpaqueTokenPrefix)
}

// handleRevoke is RFC 7009. Unknown, expired and already revoked tokens are
// answered 200 like revoked ones (§2.2); a token of another client is
// refused. Revoking an access token reaches every resource server through
// the revocation broadcast.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	req, e := s.parseClientRequest(w, r)
	switch {
	case e != nil:
	case s.storageDown():
		e = storageOutage() // a revocation is stored before it is answered
	default:
		e = s.revoke(r.Context(), req)
	}
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) revoke(ctx context.Context, req tokenRequest) *oauthError {
	tok, e := presentedToken(req)
	if e != nil {
		return e
	}
	if hint := req.form.Get("token_type_hint"); hint != "" && hint != "access_token" && hint != "refresh_token" {
		// §2.2.1 allows ignoring hints; an unknown one is not an error.
		s.log.DebugContext(ctx, "unknown token_type_hint", "client_id", req.clientID)
	}
	if isAccessToken(tok) {
		c, err := s.verifier.Verify(ctx, tok)
		if err != nil {
			return nil // invalid, expired or already revoked
		}
		if c.ClientID != req.clientID {
			return unauthorizedClient("the token was not issued to this client")
		}
		if looksLikeJWT(tok) {
			err = s.publishRevocation(ctx, auth.Revocation{TokenID: c.ID, ClientID: c.ClientID, UserID: c.Subject, ExpiresAt: c.ExpiresAt})
		} else {
			err = s.revokeAppTokensWhere(ctx, bson.M{"hash": auth.HashOpaqueToken(tok)})
		}
		if err != nil {
			return s.internalError(ctx, "revoke access token", err, "client_id", req.clientID)
		}
		s.audit(AuditEvent{Type: AuditRevocation, Success: true, UserID: c.Subject, ClientID: c.ClientID, TokenID: c.ID, SourceIP: req.ip, Detail: "access token"})
		return nil
	}
	doc, err := s.findRefreshToken(ctx, tok)
	if errors.Is(err, errTokenGone) {
		return nil
	}
	if err != nil {
		return s.internalError(ctx, "revoke refresh token", err, "client_id", req.clientID)
	}
	if doc.ClientID != req.clientID {
		return unauthorizedClient("the token was not issued to this client")
	}
	if err := s.refresh.remove(ctx, doc.Hash); err != nil && !errors.Is(err, errTokenGone) {
		return s.internalError(ctx, "revoke refresh token", err, "client_id", req.clientID)
	}
	s.audit(AuditEvent{Type: AuditRevocation, Success: true, UserID: doc.UserID, ClientID: doc.ClientID, SourceIP: req.ip, Detail: "refresh token"})
	return nil
}

// introspection is the RFC 7662 §2.2 answer.
type introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Username  string `json:"username,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	ExpiresAt int64  `json:"exp,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	Subject   string `json:"sub,omitempty"`
	Audience  string `json:"aud,omitempty"`
	Issuer    string `json:"iss,omitempty"`
	TokenID   string `json:"jti,omitempty"`
	DeviceID  string `json:"di,omitempty"`
	Role      string `json:"role,omitempty"`
}

// handleIntrospect is RFC 7662 for confidential clients. A client learns
// about tokens issued to itself or to its owner; anything else is
// {"active": false}, as is every invalid, expired or revoked token.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	req, e := s.parseClientRequest(w, r)
	if e == nil && req.client.public {
		e = invalidClient("introspection needs client authentication; public clients cannot introspect")
	}
	var tok string
	if e == nil {
		tok, e = presentedToken(req)
	}
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	ans, err := s.introspect(r.Context(), req, tok)
	if err != nil {
		writeOAuthError(w, s.internalError(r.Context(), "introspect", err, "client_id", req.clientID))
		return
	}
	body, _ := json.Marshal(ans)
	writeTokenJSON(w, http.StatusOK, body)
}

func (s *Server) introspect(ctx context.Context, req tokenRequest, tok string) (introspection, error) {
	maySee := func(clientID, userID string) bool {
		return clientID == req.clientID || (req.client.ownerID != "" && userID == req.client.ownerID)
	}
	if isAccessToken(tok) {
		c, err := s.verifier.Verify(ctx, tok)
		if err != nil || !maySee(c.ClientID, c.Subject) {
			return introspection{}, nil
		}
		return introspection{
			Active: true, Scope: c.Scope, ClientID: c.ClientID, TokenType: "Bearer",
			ExpiresAt: c.ExpiresAt.Unix(), IssuedAt: c.IssuedAt.Unix(), Subject: c.Subject,
			Audience: audience, Issuer: c.Issuer, TokenID: c.ID, DeviceID: c.DeviceID, Role: c.Role,
		}, nil
	}
	doc, err := s.findRefreshToken(ctx, tok)
	if errors.Is(err, errTokenGone) {
		return introspection{}, nil
	}
	if err != nil {
		return introspection{}, err
	}
	if !maySee(doc.ClientID, doc.UserID) {
		return introspection{}, nil
	}
	ans := introspection{
		Active: true, Scope: doc.Scope, ClientID: doc.ClientID, TokenType: "refresh_token",
		IssuedAt: doc.CreatedAt.Unix(), Subject: doc.UserID, Issuer: s.cfg.Issuer, DeviceID: doc.DeviceID,
	}
	if !doc.ExpiresAt.IsZero() {
		ans.ExpiresAt = doc.ExpiresAt.Unix()
	}
	return ans, nil
}
