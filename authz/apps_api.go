package authz

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

// AppView is an app registration as the management API shows it. The
// client secret appears only in the answers to create, reveal and rotate.
type AppView struct {
	ID           string    `json:"id"`
	ClientID     string    `json:"clientId"`
	OwnerID      string    `json:"ownerId"`
	Name         string    `json:"name"`
	Notes        string    `json:"notes"`
	Type         string    `json:"type"`
	RedirectURIs []string  `json:"redirectUris"`
	Scopes       []string  `json:"scopes"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
	ClientSecret string    `json:"clientSecret,omitempty"`
}

func viewApp(d *appDoc) AppView {
	v := AppView{
		ID: d.ID, ClientID: d.ID, OwnerID: d.OwnerID, Name: d.Name, Notes: d.Notes, Type: d.Type,
		RedirectURIs: d.RedirectURIs, Scopes: d.Scopes, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
	if v.RedirectURIs == nil {
		v.RedirectURIs = []string{}
	}
	return v
}

// SecretView answers reveal and rotate.
type SecretView struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

type createAppRequest struct {
	Name         string   `json:"name"`
	Notes        string   `json:"notes"`
	Type         string   `json:"type"`
	RedirectURIs []string `json:"redirectUris"`
	Scopes       []string `json:"scopes"`
}

func (s *Server) handleCreateApp(w http.ResponseWriter, r *http.Request) {
	u, ok := s.requireUser(w, r)
	if !ok {
		return
	}
	var req createAppRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	ctx := r.Context()
	now := s.now().UTC()
	d := appDoc{
		ID: randomToken(18), OwnerID: u.ID, Name: req.Name, Notes: req.Notes, Type: req.Type,
		RedirectURIs: req.RedirectURIs, Scopes: req.Scopes, CreatedAt: now, UpdatedAt: now,
	}
	if err := validateApp(&d); err != nil {
		httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	n, err := s.apps.CountDocuments(ctx, bson.M{"owner_id": u.ID})
	if err != nil {
		s.problemInternal(w, r, "create app", err)
		return
	}
	if n >= maxAppsPerUser {
		httpx.WriteProblem(w, http.StatusConflict, "too many apps; delete one first")
		return
	}
	var secret string
	if d.Type != AppSPA {
		secret = randomToken(32)
		d.SecretHash, d.SecretSealed = hashToken(secret), s.box.seal(secret, d.ID)
	}
	if _, err := s.apps.InsertOne(ctx, d); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			httpx.WriteProblem(w, http.StatusConflict, "you already have an app with this name")
			return
		}
		s.problemInternal(w, r, "create app", err)
		return
	}
	s.audit(AuditEvent{Type: AuditAppCreated, Success: true, UserID: u.ID, ActorID: u.ID, ClientID: d.ID, SourceIP: clientIP(r), Detail: "type " + d.Type})
	s.log.InfoContext(ctx, "app registered", "user_id", u.ID, "client_id", d.ID, "type", d.Type)
	v := viewApp(&d)
	v.ClientSecret = secret
	w.Header().Set("Location", s.cfg.Issuer+appsPath+"/"+d.ID)
	httpx.WriteJSON(w, http.StatusCreated, v)
}

// handleListApps lists the caller's apps; an administrator sees everyone's
// with ?all=true.
func (s *Server) handleListApps(w http.ResponseWriter, r *http.Request) {
	u, ok := s.requireUser(w, r)
	if !ok {
		return
	}
	filter := bson.M{"owner_id": u.ID}
	if r.URL.Query().Get("all") == "true" {
		if u.Role != auth.RoleAdmin {
			httpx.WriteProblem(w, http.StatusForbidden, "only administrators may list every app")
			return
		}
		filter = bson.M{}
	}
	docs, err := findAll[appDoc](r.Context(), s.apps, filter, options.Find().SetSort(bson.D{{Key: "name", Value: 1}, {Key: "_id", Value: 1}}).SetLimit(10_000))
	if err != nil {
		s.problemInternal(w, r, "list apps", err)
		return
	}
	out := make([]AppView, 0, len(docs))
	for i := range docs {
		out = append(out, viewApp(&docs[i]))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// appOf loads the app of the path for the caller: its owner, or an
// administrator unless ownerOnly. Others get 404, so app ids do not leak.
func (s *Server) appOf(w http.ResponseWriter, r *http.Request, ownerOnly bool) (*user, *appDoc, bool) {
	u, ok := s.requireUser(w, r)
	if !ok {
		return nil, nil, false
	}
	var d appDoc
	err := s.apps.FindOne(r.Context(), bson.M{"_id": r.PathValue("id")}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		httpx.WriteProblem(w, http.StatusNotFound, "no such app")
		return nil, nil, false
	}
	if err != nil {
		s.problemInternal(w, r, "find app", err)
		return nil, nil, false
	}
	if d.OwnerID != u.ID && (ownerOnly || u.Role != auth.RoleAdmin) {
		httpx.WriteProblem(w, http.StatusNotFound, "no such app")
		return nil, nil, false
	}
	return u, &d, true
}

func (s *Server) handleGetApp(w http.ResponseWriter, r *http.Request) {
	if _, d, ok := s.appOf(w, r, false); ok {
		httpx.WriteJSON(w, http.StatusOK, viewApp(d))
	}
}

type updateAppRequest struct {
	Name         *string   `json:"name"`
	Notes        *string   `json:"notes"`
	Type         *string   `json:"type"`
	RedirectURIs *[]string `json:"redirectUris"`
	Scopes       *[]string `json:"scopes"`
}

// handleUpdateApp changes name, notes, redirect URIs or allowed scopes. The
// type is fixed at creation: it decides whether the app has a secret.
func (s *Server) handleUpdateApp(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	var req updateAppRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Type != nil && *req.Type != d.Type {
		httpx.WriteProblem(w, http.StatusBadRequest, "the type of an app cannot change; register a new app")
		return
	}
	var changed []string
	if req.Name != nil {
		d.Name, changed = *req.Name, append(changed, "name")
	}
	if req.Notes != nil {
		d.Notes, changed = *req.Notes, append(changed, "notes")
	}
	if req.RedirectURIs != nil {
		d.RedirectURIs, changed = *req.RedirectURIs, append(changed, "redirectUris")
	}
	if req.Scopes != nil {
		d.Scopes, changed = *req.Scopes, append(changed, "scopes")
		if d.Scopes == nil {
			d.Scopes = []string{}
		}
	}
	if err := validateApp(d); err != nil {
		httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(changed) > 0 {
		ctx := r.Context()
		d.UpdatedAt = s.now().UTC()
		_, err := s.apps.UpdateOne(ctx, bson.M{"_id": d.ID}, bson.M{"$set": bson.M{
			"name": d.Name, "notes": d.Notes, "redirect_uris": d.RedirectURIs, "scopes": d.Scopes, "updated_at": d.UpdatedAt,
		}})
		if isDuplicate(err) {
			httpx.WriteProblem(w, http.StatusConflict, "the owner already has an app with this name")
			return
		}
		if err != nil {
			s.problemInternal(w, r, "update app", err)
			return
		}
		s.clientChanged(ctx, d.ID)
		s.audit(AuditEvent{Type: AuditAppUpdated, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: d.ID, SourceIP: clientIP(r), Detail: strings.Join(changed, ",")})
	}
	httpx.WriteJSON(w, http.StatusOK, viewApp(d))
}

// handleDeleteApp deletes the app and revokes every token it holds.
func (s *Server) handleDeleteApp(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	ctx := r.Context()
	if _, err := s.apps.DeleteOne(ctx, bson.M{"_id": d.ID}); err != nil {
		s.problemInternal(w, r, "delete app", err)
		return
	}
	if err := s.revokeClient(ctx, d.ID, d.OwnerID, s.now()); err != nil {
		s.problemInternal(w, r, "revoke app tokens", err)
		return
	}
	s.audit(AuditEvent{Type: AuditAppDeleted, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: d.ID, SourceIP: clientIP(r)})
	s.log.InfoContext(ctx, "app deleted", "user_id", u.ID, "client_id", d.ID)
	w.WriteHeader(http.StatusNoContent)
}

// handleRevealSecret shows the secret to the app's owner only.
func (s *Server) handleRevealSecret(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, true)
	if !ok {
		return
	}
	if d.Type == AppSPA || len(d.SecretSealed) == 0 {
		httpx.WriteProblem(w, http.StatusConflict, "this app has no secret")
		return
	}
	secret, err := s.box.open(d.SecretSealed, d.ID)
	if err != nil {
		s.problemInternal(w, r, "reveal secret", err)
		return
	}
	s.audit(AuditEvent{Type: AuditAppSecretRevealed, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: d.ID, SourceIP: clientIP(r)})
	httpx.WriteJSON(w, http.StatusOK, SecretView{ClientID: d.ID, ClientSecret: secret})
}

// handleRotateSecret gives the app a new secret and revokes every token
// issued under the old one (seed 004).
func (s *Server) handleRotateSecret(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	if d.Type == AppSPA {
		httpx.WriteProblem(w, http.StatusConflict, "this app has no secret")
		return
	}
	ctx := r.Context()
	now := s.now()
	secret := randomToken(32)
	if _, err := s.apps.UpdateOne(ctx, bson.M{"_id": d.ID}, bson.M{"$set": bson.M{
		"secret_hash": hashToken(secret), "secret_sealed": s.box.seal(secret, d.ID),
		"updated_at": now.UTC(), "tokens_valid_after": now.UTC(),
	}}); err != nil {
		s.problemInternal(w, r, "rotate secret", err)
		return
	}
	if err := s.revokeClient(ctx, d.ID, d.OwnerID, now); err != nil {
		s.problemInternal(w, r, "revoke app tokens", err)
		return
	}
	s.audit(AuditEvent{Type: AuditAppSecretRotated, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: d.ID, SourceIP: clientIP(r)})
	s.log.InfoContext(ctx, "app secret rotated", "user_id", u.ID, "client_id", d.ID)
	httpx.WriteJSON(w, http.StatusOK, SecretView{ClientID: d.ID, ClientSecret: secret})
}

// clientChanged drops the client from this process's cache and tells the
// other authz replicas to do the same.
func (s *Server) clientChanged(ctx context.Context, clientID string) {
	s.clients.forget(clientID)
	if s.cfg.NATS != nil {
		if err := s.cfg.NATS.Publish(clientsChangedSubject, []byte(clientID)); err != nil {
			s.log.WarnContext(ctx, "announce client change failed", "client_id", clientID, "err", err)
		}
	}
}

// isDuplicate reports a unique index violation. FerretDB v1.24 answers one
// on update with InternalError (code 1) and SQLite's message, not 11000.
func isDuplicate(err error) bool {
	return err != nil && (mongo.IsDuplicateKeyError(err) || strings.Contains(err.Error(), "UNIQUE constraint failed"))
}

// AuditAppClientIDRotated records a new client id for an app.
const AuditAppClientIDRotated = "app_client_id_rotated"

// handleRotateClientID gives the app a new client id (seed 004: "if it is
// suspected that the Client ID has been compromised, it can be changed"),
// keeping everything else including the secret, and revokes every token and
// session of the old id. The id is the document's _id, which cannot change
// in place: the old document is deleted and the new one inserted (put back
// if that fails; FerretDB has no transactions).
func (s *Server) handleRotateClientID(w http.ResponseWriter, r *http.Request) {
	u, d, ok := s.appOf(w, r, false)
	if !ok {
		return
	}
	ctx := r.Context()
	now := s.now()
	old := *d
	next := *d
	next.ID = randomToken(18)
	next.UpdatedAt, next.TokensValidAfter = now.UTC(), now.UTC()
	if len(d.SecretSealed) > 0 {
		secret, err := s.box.open(d.SecretSealed, d.ID)
		if err != nil {
			s.problemInternal(w, r, "rotate client id", err)
			return
		}
		next.SecretSealed = s.box.seal(secret, next.ID)
	}
	if _, err := s.apps.DeleteOne(ctx, bson.M{"_id": old.ID}); err != nil {
		s.problemInternal(w, r, "rotate client id", err)
		return
	}
	if _, err := s.apps.InsertOne(context.WithoutCancel(ctx), next); err != nil {
		if _, rerr := s.apps.InsertOne(context.WithoutCancel(ctx), old); rerr != nil {
			s.log.ErrorContext(ctx, "restoring app after a failed client id rotation failed", "client_id", old.ID, "err", rerr)
		}
		s.problemInternal(w, r, "rotate client id", err)
		return
	}
	if err := s.revokeClient(context.WithoutCancel(ctx), old.ID, old.OwnerID, now); err != nil {
		s.problemInternal(w, r, "revoke app tokens", err)
		return
	}
	s.audit(AuditEvent{Type: AuditAppClientIDRotated, Success: true, UserID: d.OwnerID, ActorID: u.ID, ClientID: next.ID, SourceIP: clientIP(r),
		Detail: "previous client id " + old.ID})
	s.log.InfoContext(ctx, "app client id rotated", "user_id", u.ID, "client_id", next.ID)
	w.Header().Set("Location", s.cfg.Issuer+appsPath+"/"+next.ID)
	httpx.WriteJSON(w, http.StatusOK, viewApp(&next))
}
