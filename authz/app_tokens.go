package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// Audit event types of admin-issued tokens.
const (
	AuditAppTokenCreated = "app_token_created"
	AuditAppTokenRevoked = "app_token_revoked"
	AuditAppTokenExpired = "app_token_expired_use"
)

const (
	maxTokensPerApp  = 100
	maxAppTokenTTL   = 5 * 365 * 24 * time.Hour
	appTokenKeepDays = 30 // expired tokens stay listed this long
)

// AppTokenView is an admin-issued token as the management API lists it.
// Token is set only in the answer to its creation.
type AppTokenView struct {
	ID         string     `json:"id"`
	ClientID   string     `json:"clientId"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  time.Time  `json:"expiresAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	Expired    bool       `json:"expired"`
	Token      string     `json:"token,omitempty"`
}

func (s *Server) viewAppToken(t *auth.OpaqueToken) AppTokenView {
	v := AppTokenView{
		ID: t.ID, ClientID: t.ClientID, Scopes: strings.Fields(t.Scope), CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt,
		Expired: !s.now().Before(t.ExpiresAt),
	}
	if !t.LastUsedAt.IsZero() {
		lu := t.LastUsedAt
		v.LastUsedAt = &lu
	}
	return v
}

type createAppTokenRequest struct {
	ExpiresAt time.Time `json:"expiresAt"`
	Scopes    []string  `json:"scopes"`
}

// handleCreateAppToken issues an opaque access token for the app (seed
// 001) to pass on to a third party that cannot manage tokens itself. It acts
// as the app's owner with the app's API scopes (or the requested subset).
func (s *Server) handleCreateAppToken(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	var req createAppTokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	ctx := r.Context()
	now := s.now()
	switch {
	case req.ExpiresAt.IsZero():
		httpx.WriteProblem(w, http.StatusBadRequest, "expiresAt (RFC 3339) is required")
		return
	case !req.ExpiresAt.After(now):
		httpx.WriteProblem(w, http.StatusBadRequest, "expiresAt must be in the future")
		return
	case req.ExpiresAt.Sub(now) > maxAppTokenTTL:
		httpx.WriteProblem(w, http.StatusBadRequest, "expiresAt must be within 5 years")
		return
	}
	var allowed []string
	for _, sc := range d.Scopes {
		if slices.Contains(apiScopes, sc) {
			allowed = append(allowed, sc)
		}
	}
	scopes := allowed
	if req.Scopes != nil {
		scopes = nil
		for _, sc := range req.Scopes {
			if !slices.Contains(allowed, sc) {
				httpx.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("scope %.80q is not an API scope allowed for this app", sc))
				return
			}
			if !slices.Contains(scopes, sc) {
				scopes = append(scopes, sc)
			}
		}
	}
	owner, err := s.activeUser(ctx, d.OwnerID)
	if errors.Is(err, errUnauthenticated) {
		httpx.WriteProblem(w, http.StatusConflict, "the app's owner is disabled")
		return
	}
	if err != nil {
		s.problemInternal(w, r, "create app token", err)
		return
	}
	n, err := s.appTokens.CountDocuments(ctx, bson.M{"client_id": d.ID})
	if err != nil {
		s.problemInternal(w, r, "create app token", err)
		return
	}
	if n >= maxTokensPerApp {
		httpx.WriteProblem(w, http.StatusConflict, "the app has too many tokens; revoke some first")
		return
	}
	raw := auth.OpaqueTokenPrefix + randomToken(32)
	// created_at is a whole second later than any revocation cutoff of the
	// app or owner, like a JWT's iat.
	created := now.UTC().Truncate(time.Second)
	if va := latest(owner.TokensValidAfter, d.TokensValidAfter); !created.After(va) {
		created = va.UTC().Truncate(time.Second).Add(time.Second)
	}
	t := auth.OpaqueToken{
		ID: ids.New(), Hash: auth.HashOpaqueToken(raw), ClientID: d.ID, UserID: owner.ID, Role: owner.Role,
		Scope: strings.Join(scopes, " "), CreatedAt: created, ExpiresAt: req.ExpiresAt.UTC().Truncate(time.Second),
		CreatedBy: u.ID,
	}
	if _, err := s.appTokens.InsertOne(ctx, t); err != nil {
		s.problemInternal(w, r, "create app token", err)
		return
	}
	s.verifier.AddOpaqueToken(t)
	if nc := s.cfg.NATS; nc != nil {
		b, _ := json.Marshal(t)
		if err := nc.Publish(auth.TokensSubject, b); err == nil {
			// The token is handed out only after the resource servers have
			// been told, as far as NATS can promise it.
			_ = nc.FlushTimeout(2 * time.Second)
		} else {
			s.log.WarnContext(ctx, "announce app token failed", "client_id", d.ID, "err", err)
		}
	}
	s.audit(AuditEvent{Type: AuditAppTokenCreated, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: d.ID, TokenID: t.ID, SourceIP: clientIP(r),
		Detail: "expires " + t.ExpiresAt.Format(time.RFC3339)})
	v := s.viewAppToken(&t)
	v.Token = raw
	w.Header().Set("Location", s.cfg.Issuer+appsPath+"/"+d.ID+"/tokens/"+t.ID)
	httpx.WriteJSON(w, http.StatusCreated, v)
}

func (s *Server) handleListAppTokens(w http.ResponseWriter, r *http.Request) {
	_, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	ctx := r.Context()
	if err := s.verifier.FlushLastUsed(ctx); err != nil {
		s.log.WarnContext(ctx, "flush last-used times failed", "err", err)
	}
	list, err := findAll[auth.OpaqueToken](ctx, s.appTokens, bson.M{"client_id": d.ID}, options.Find().SetSort(bson.D{{Key: "created_at", Value: -1}, {Key: "_id", Value: 1}}))
	if err != nil {
		s.problemInternal(w, r, "list app tokens", err)
		return
	}
	out := make([]AppTokenView, 0, len(list))
	for i := range list {
		out = append(out, s.viewAppToken(&list[i]))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevokeAppToken(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	ctx := r.Context()
	var t auth.OpaqueToken
	err := s.appTokens.FindOne(ctx, bson.M{"_id": r.PathValue("tokenId"), "client_id": d.ID}).Decode(&t)
	if errors.Is(err, mongo.ErrNoDocuments) {
		httpx.WriteProblem(w, http.StatusNotFound, "no such token")
		return
	}
	if err != nil {
		s.problemInternal(w, r, "revoke app token", err)
		return
	}
	if err := s.revokeAppTokens(ctx, []auth.OpaqueToken{t}); err != nil {
		s.problemInternal(w, r, "revoke app token", err)
		return
	}
	s.audit(AuditEvent{Type: AuditAppTokenRevoked, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: d.ID, TokenID: t.ID, SourceIP: clientIP(r)})
	w.WriteHeader(http.StatusNoContent)
}

// revokeAppTokens revokes the given admin-issued tokens everywhere and
// deletes them. Their revocations last as long as the tokens would have.
func (s *Server) revokeAppTokens(ctx context.Context, list []auth.OpaqueToken) error {
	now := s.now()
	for _, t := range list {
		if now.Before(t.ExpiresAt) {
			if err := s.publishRevocation(ctx, auth.Revocation{
				TokenHash: t.Hash, TokenID: "", ClientID: t.ClientID, UserID: t.UserID, ExpiresAt: t.ExpiresAt,
			}); err != nil {
				return err
			}
		}
		if _, err := s.appTokens.DeleteOne(ctx, bson.M{"_id": t.ID}); err != nil {
			return fmt.Errorf("delete app token %s: %w", t.ID, err)
		}
	}
	return nil
}

// revokeAppTokensWhere revokes every admin-issued token matching filter (an
// app's, a user's).
func (s *Server) revokeAppTokensWhere(ctx context.Context, filter bson.M) error {
	list, err := findAll[auth.OpaqueToken](ctx, s.appTokens, filter)
	if err != nil {
		return fmt.Errorf("find app tokens: %w", err)
	}
	return s.revokeAppTokens(ctx, list)
}

// recordExpiredUse writes a use of an expired admin-issued token to the
// audit log (seed 001: "When an application makes an API call with an
// expired access token it will be logged").
func (s *Server) recordExpiredUse(u auth.ExpiredTokenUse) {
	s.audit(AuditEvent{Time: u.At, Type: AuditAppTokenExpired, UserID: u.UserID, ClientID: u.ClientID, TokenID: u.TokenID, SourceIP: u.SourceIP,
		Detail: "call with an expired access token rejected"})
}

// followExpiredUses records what the resource servers report.
func (s *Server) followExpiredUses() error {
	if s.cfg.NATS == nil {
		return nil
	}
	// A queue group: with several authz replicas one of them records it.
	sub, err := s.cfg.NATS.QueueSubscribe(auth.ExpiredUseSubject, "authz", func(m *nats.Msg) {
		var u auth.ExpiredTokenUse
		if json.Unmarshal(m.Data, &u) == nil && u.TokenID != "" {
			if u.At.IsZero() {
				u.At = s.now()
			}
			s.recordExpiredUse(u)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", auth.ExpiredUseSubject, err)
	}
	s.subs = append(s.subs, sub)
	return nil
}
