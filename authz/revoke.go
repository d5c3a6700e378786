package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// clientsChangedSubject tells authz replicas to drop a client (payload: its
// id) from their caches after an update that revokes nothing.
const clientsChangedSubject = "ocfcloud.authz.clients.changed"

// revocationDoc is an auth.Revocation as stored; the set is loaded by every
// verifier at start and swept once every token it covers has expired.
type revocationDoc struct {
	ID              string `bson:"_id"`
	auth.Revocation `bson:",inline"`
}

// maxAccessTTL is how long a revocation by client or user must be kept: the
// longest lifetime of a JWT access token, plus clock skew.
func (s *Server) maxAccessTTL() time.Duration {
	return max(s.cfg.AccessTokenTTL, s.cfg.DeviceAccessTokenTTL) + time.Minute
}

// publishRevocation stores r (so verifiers that start later know it), applies
// it to this process's verifier at once and broadcasts it to the others.
func (s *Server) publishRevocation(ctx context.Context, r auth.Revocation) error {
	if err := r.Validate(); err != nil {
		return err
	}
	r.ExpiresAt = r.ExpiresAt.UTC()
	if !r.IssuedBefore.IsZero() {
		r.IssuedBefore = r.IssuedBefore.UTC()
	}
	if _, err := s.revocations.InsertOne(ctx, revocationDoc{ID: ids.New(), Revocation: r}); err != nil {
		return fmt.Errorf("store revocation: %w", err)
	}
	s.verifier.Revoke(r)
	if s.cfg.NATS != nil {
		b, _ := json.Marshal(r)
		if err := s.cfg.NATS.Publish(auth.RevokedSubject, b); err != nil {
			// Stored already: verifiers that reconnect or restart get it.
			s.log.WarnContext(ctx, "broadcast revocation failed", "client_id", r.ClientID, "user_id", r.UserID, "err", err)
		}
	}
	return nil
}

// revokeClient ends every token and session of a client: its refresh tokens
// are deleted and its access tokens issued until now are revoked.
func (s *Server) revokeClient(ctx context.Context, clientID, ownerID string, now time.Time) error {
	s.clients.forget(clientID)
	if err := s.refresh.removeClient(ctx, clientID); err != nil {
		return err
	}
	// Sessions of the app: remembered consents and unredeemed codes.
	for _, c := range []*mongo.Collection{s.consents, s.authCodes} {
		if _, err := c.DeleteMany(ctx, bson.M{"client_id": clientID}); err != nil {
			return fmt.Errorf("delete %s of %s: %w", c.Name(), clientID, err)
		}
	}
	// Admin-issued tokens may outlive the cutoff below, so each is revoked
	// for its own lifetime.
	if err := s.revokeAppTokensWhere(ctx, bson.M{"client_id": clientID}); err != nil {
		return err
	}
	if err := s.publishRevocation(ctx, auth.Revocation{
		ClientID: clientID, IssuedBefore: now, ExpiresAt: now.Add(s.maxAccessTTL()),
	}); err != nil {
		return err
	}
	s.audit(AuditEvent{Type: AuditRevocation, Success: true, UserID: ownerID, ClientID: clientID, Detail: "every token of the app"})
	return nil
}

// revokeUser revokes every access token of a user issued until now. Refresh
// tokens stay: the refresh grant checks that the user is active, and a
// re-enabled user's devices keep working.
func (s *Server) revokeUser(ctx context.Context, userID string, now time.Time) error {
	s.userCache.forget(userID)
	if err := s.revokeAppTokensWhere(ctx, bson.M{"user_id": userID}); err != nil {
		return err
	}
	if err := s.publishRevocation(ctx, auth.Revocation{
		UserID: userID, IssuedBefore: now, ExpiresAt: now.Add(s.maxAccessTTL()),
	}); err != nil {
		return err
	}
	s.audit(AuditEvent{Type: AuditRevocation, Success: true, UserID: userID, Detail: "every token of the user"})
	return nil
}

// followChanges keeps this replica's caches in step with changes made by
// other replicas.
func (s *Server) followChanges() error {
	nc := s.cfg.NATS
	if nc == nil {
		return nil
	}
	sub, err := nc.Subscribe(auth.RevokedSubject, func(m *nats.Msg) {
		var r auth.Revocation
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		if r.ClientID != "" && r.TokenID == "" && r.TokenHash == "" {
			s.clients.forget(r.ClientID)
		}
		if r.UserID != "" && r.TokenID == "" && r.TokenHash == "" && r.ClientID == "" {
			s.userCache.forget(r.UserID)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", auth.RevokedSubject, err)
	}
	s.subs = append(s.subs, sub)
	sub, err = nc.Subscribe(clientsChangedSubject, func(m *nats.Msg) { s.clients.forget(string(m.Data)) })
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", clientsChangedSubject, err)
	}
	s.subs = append(s.subs, sub)
	sub, err = nc.Subscribe(keysRotatedSubject, func(*nats.Msg) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.reloadKeys(ctx); err != nil {
			s.log.Error("reload signing keys failed", "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", keysRotatedSubject, err)
	}
	s.subs = append(s.subs, sub)
	return nil
}
