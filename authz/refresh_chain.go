package authz

import (
	"context"
	"errors"
	"fmt"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

// AuditRefreshReuse records a rotated refresh token presented again.
const AuditRefreshReuse = "refresh_token_reuse"

// refreshTokenGone answers a refresh grant whose token is not live. If the
// token was rotated, this is a reuse (RFC 9700 §4.14.2): someone holds a
// copy, and the legitimate client cannot be told from the attacker, so the
// whole chain is revoked, including the access token of its live token.
// Within the grace window after the rotation it is taken for a concurrent
// retry of the client itself (two tabs, a lost answer) and only refused.
func (s *Server) refreshTokenGone(ctx context.Context, req tokenRequest, hash string) *oauthError {
	m, err := s.refresh.rotated(ctx, hash)
	if errors.Is(err, errTokenGone) {
		return invalidGrant(errTokenGone.Error())
	}
	if err != nil {
		return s.internalError(ctx, "refresh grant", err, "client_id", req.clientID)
	}
	now := s.now()
	if now.Sub(m.RotatedAt) < s.cfg.RefreshReuseGrace {
		s.log.InfoContext(ctx, "rotated refresh token retried within the grace window", "client_id", m.ClientID, "user_id", m.UserID)
		return invalidGrant(errTokenGone.Error())
	}
	s.log.WarnContext(ctx, "rotated refresh token reused, revoking its chain", "client_id", m.ClientID, "user_id", m.UserID)
	s.audit(AuditEvent{Type: AuditRefreshReuse, UserID: m.UserID, ClientID: m.ClientID, SourceIP: req.ip,
		Detail: "rotated refresh token presented again; chain revoked"})
	if err := s.revokeRefreshChain(ctx, m.ChainID); err != nil {
		return s.internalError(ctx, "revoke refresh chain", err, "client_id", m.ClientID)
	}
	return invalidGrant(errTokenGone.Error())
}

// revokeRefreshChain deletes the chain's live refresh token and revokes the
// access token issued with it. The chain marker only has to outlive
// rotations already in flight; one refresh lifetime is ample.
func (s *Server) revokeRefreshChain(ctx context.Context, chainID string) error {
	if chainID == "" { // a token from before chains existed: nothing to find
		return nil
	}
	live, err := s.refresh.revokeChain(ctx, chainID, s.now().Add(s.cfg.RefreshTokenTTL))
	if err != nil {
		return err
	}
	for _, t := range live {
		if t.AccessJTI == "" || !s.now().Before(t.AccessExpiresAt) {
			continue
		}
		if err := s.publishRevocation(ctx, auth.Revocation{
			TokenID: t.AccessJTI, ClientID: t.ClientID, UserID: t.UserID, ExpiresAt: t.AccessExpiresAt,
		}); err != nil {
			return err
		}
	}
	s.audit(AuditEvent{Type: AuditRevocation, Success: true, ClientID: firstClient(live), UserID: firstUser(live), Detail: "refresh token chain"})
	return nil
}

func firstClient(l []refreshTokenDoc) string {
	if len(l) == 0 {
		return ""
	}
	return l[0].ClientID
}

func firstUser(l []refreshTokenDoc) string {
	if len(l) == 0 {
		return ""
	}
	return l[0].UserID
}

// enforceRefreshLimits runs after a new chain starts: past the limit per
// client and user, or per user across clients, the oldest chains stop
// working (seed 003). Device chains are exempt: each device holds one, and
// a user's eleventh device must not sign out the first.
func (s *Server) enforceRefreshLimits(ctx context.Context, started refreshTokenDoc) error {
	if started.DeviceID != "" || started.ClientID == clientDevice {
		return nil
	}
	list, err := s.refresh.listUser(ctx, started.UserID)
	if err != nil {
		return err
	}
	perClient, total := 0, 0
	for _, t := range list {
		if t.DeviceID == "" && t.ClientID != clientDevice {
			total++
			if t.ClientID == started.ClientID {
				perClient++
			}
		}
	}
	for _, t := range list { // oldest chain first
		if t.DeviceID != "" || t.ClientID == clientDevice || t.ChainID == started.ChainID {
			continue
		}
		overClient := t.ClientID == started.ClientID && perClient > s.cfg.RefreshLimitPerClient
		if !overClient && total <= s.cfg.RefreshLimitPerUser {
			continue
		}
		if err := s.refresh.remove(ctx, t.Hash); err != nil && !errors.Is(err, errTokenGone) {
			return fmt.Errorf("drop oldest refresh token: %w", err)
		}
		total--
		if t.ClientID == started.ClientID {
			perClient--
		}
		s.log.InfoContext(ctx, "oldest refresh token dropped by the limit", "user_id", t.UserID, "client_id", t.ClientID)
	}
	return nil
}
