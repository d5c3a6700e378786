package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Admin-issued access tokens (seed 001) are opaque: OpaqueTokenPrefix and
// 43 characters of base64url. authz stores only their SHA-256 hash; resource
// servers keep every token's metadata in memory, loaded from
// AppTokensCollection at start and kept current by TokensSubject, so
// verifying one costs a hash and a map lookup, never a database call.
const (
	OpaqueTokenPrefix   = "ocfat_"
	AppTokensCollection = "app_tokens"
	// TokensSubject carries an OpaqueToken (metadata only) when one is issued.
	TokensSubject = "ocfcloud.authz.tokens"
	// ExpiredUseSubject carries an ExpiredTokenUse for authz's audit log.
	ExpiredUseSubject = "ocfcloud.authz.expired-use"
)

// OpaqueToken is the stored form of an admin-issued access token.
type OpaqueToken struct {
	ID         string    `bson:"_id" json:"id"`
	Hash       string    `bson:"hash" json:"hash"` // SHA-256 of the token, hex
	ClientID   string    `bson:"client_id" json:"client_id"`
	UserID     string    `bson:"user_id" json:"user_id"` // the app's owner, whom it acts as
	Role       string    `bson:"role,omitempty" json:"role,omitempty"`
	Scope      string    `bson:"scope" json:"scope"`
	CreatedAt  time.Time `bson:"created_at" json:"created_at"`
	ExpiresAt  time.Time `bson:"expires_at" json:"expires_at"`
	CreatedBy  string    `bson:"created_by,omitempty" json:"-"`
	LastUsedAt time.Time `bson:"last_used_at,omitempty" json:"-"`
}

// HashOpaqueToken is how opaque tokens are stored and looked up.
func HashOpaqueToken(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

// ExpiredTokenUse reports a call made with an expired opaque token.
type ExpiredTokenUse struct {
	TokenID  string    `json:"token_id"`
	ClientID string    `json:"client_id"`
	UserID   string    `json:"user_id"`
	SourceIP string    `json:"source_ip,omitempty"`
	At       time.Time `json:"at"`
}

// ExpiredTokenError is returned by Verify for an expired opaque token.
type ExpiredTokenError struct{ Use ExpiredTokenUse }

func (e *ExpiredTokenError) Error() string { return "access token " + e.Use.TokenID + " has expired" }

// keepExpired is how long an expired opaque token stays known, so that its
// use is reported as "expired" rather than "unknown".
const keepExpired = 7 * 24 * time.Hour

// lastUsedFlushEvery is how often last-used times are written; the list in
// the portal is that coarse, and FerretDB manages ~80 updates a second.
const lastUsedFlushEvery = 30 * time.Second

type opaqueTokens struct {
	mu     sync.RWMutex
	byHash map[string]*opaqueToken

	usedMu sync.Mutex
	used   map[string]time.Time // token id -> last use, not yet written
}

// opaqueToken is a known token with the claims Verify answers for it, built
// once rather than on every request.
type opaqueToken struct {
	OpaqueToken
	claims Claims
}

func newOpaqueTokens() *opaqueTokens {
	return &opaqueTokens{byHash: make(map[string]*opaqueToken), used: make(map[string]time.Time)}
}

func (o *opaqueTokens) add(t OpaqueToken, now time.Time) {
	if t.Hash == "" || now.Sub(t.ExpiresAt) > keepExpired {
		return
	}
	e := &opaqueToken{OpaqueToken: t, claims: Claims{
		Subject: t.UserID, ClientID: t.ClientID, Scope: t.Scope, Role: t.Role, ID: t.ID,
		ExpiresAt: t.ExpiresAt, IssuedAt: t.CreatedAt, tokenHash: t.Hash,
	}}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byHash[t.Hash] = e
}

// get looks a token up by the hex of its hash, given as bytes so that the
// caller can keep them on its stack.
func (o *opaqueTokens) get(hash []byte) *opaqueToken {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.byHash[string(hash)] // no copy: the compiler looks up without allocating
}

// lookup finds the raw token.
func (o *opaqueTokens) lookup(raw string) *opaqueToken {
	k := tokenKey(raw)
	var hx [2 * len(k)]byte
	hex.Encode(hx[:], k[:])
	return o.get(hx[:])
}

func (o *opaqueTokens) drop(hash string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.byHash, hash)
}

func (o *opaqueTokens) load(ctx context.Context, db *mongo.Database, now time.Time) error {
	cur, err := db.Collection(AppTokensCollection).Find(ctx, bson.M{"expires_at": bson.M{"$gt": now.Add(-keepExpired).UTC()}})
	if err != nil {
		return fmt.Errorf("load app tokens: %w", err)
	}
	var list []OpaqueToken
	if err := cur.All(ctx, &list); err != nil {
		return fmt.Errorf("load app tokens: %w", err)
	}
	for _, t := range list {
		o.add(t, now)
	}
	return nil
}

func (o *opaqueTokens) touch(id string, at time.Time) {
	o.usedMu.Lock()
	defer o.usedMu.Unlock()
	if at.After(o.used[id]) {
		o.used[id] = at
	}
}

// verifyOpaque checks an admin-issued token against memory only. The claims
// are the verifier's: the caller must not modify them.
func (v *Verifier) verifyOpaque(raw string) (*Claims, error) {
	if v.opaque == nil {
		return nil, errors.New("verify token: unknown opaque token")
	}
	t := v.opaque.lookup(raw)
	if t == nil {
		return nil, errors.New("verify token: unknown opaque token")
	}
	now := v.now()
	c := &t.claims
	if v.revoked.revoked(c) {
		return nil, fmt.Errorf("verify token: %w", ErrRevoked)
	}
	if !now.Before(t.ExpiresAt) {
		return nil, &ExpiredTokenError{Use: ExpiredTokenUse{TokenID: t.ID, ClientID: t.ClientID, UserID: t.UserID, At: now}}
	}
	v.opaque.touch(t.ID, now)
	return c, nil
}

// AddOpaqueToken makes an issued admin token known to this verifier; authz
// calls it for its own verifier, others learn it from TokensSubject.
func (v *Verifier) AddOpaqueToken(t OpaqueToken) {
	if v.opaque != nil {
		v.opaque.add(t, v.now())
	}
}

// FlushLastUsed writes the last-used times gathered since the previous
// flush. It runs every 30 s in the background; callers that list tokens
// call it first to show current values.
func (v *Verifier) FlushLastUsed(ctx context.Context) error {
	if v.opaque == nil || v.db == nil {
		return nil
	}
	o := v.opaque
	o.usedMu.Lock()
	batch := o.used
	o.used = make(map[string]time.Time)
	o.usedMu.Unlock()
	coll := v.db.Collection(AppTokensCollection)
	var errs []error
	for id, at := range batch {
		// The filter keeps a slower replica from moving the time back.
		_, err := coll.UpdateOne(ctx,
			bson.M{"_id": id, "$or": bson.A{bson.M{"last_used_at": bson.M{"$exists": false}}, bson.M{"last_used_at": bson.M{"$lt": at.UTC()}}}},
			bson.M{"$set": bson.M{"last_used_at": at.UTC()}})
		if err != nil {
			errs = append(errs, err)
			o.touch(id, at) // try again next time
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("write last-used times: %w", err)
	}
	return nil
}

// reportExpired tells authz's audit log about an expired token's use.
func (v *Verifier) reportExpired(u ExpiredTokenUse) {
	if v.nc != nil {
		b, _ := json.Marshal(u)
		_ = v.nc.Publish(ExpiredUseSubject, b)
		return
	}
	if v.onExpired != nil {
		v.onExpired(u)
	}
}

// subscribeTokens follows TokensSubject.
func (v *Verifier) subscribeTokens(nc *nats.Conn) error {
	sub, err := nc.Subscribe(TokensSubject, func(m *nats.Msg) {
		var t OpaqueToken
		if json.Unmarshal(m.Data, &t) == nil {
			v.AddOpaqueToken(t)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", TokensSubject, err)
	}
	v.subs = append(v.subs, sub)
	return nil
}

func (v *Verifier) flushLoop(ctx context.Context) {
	t := time.NewTicker(lastUsedFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = v.FlushLastUsed(fctx)
			cancel()
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_ = v.FlushLastUsed(fctx)
			cancel()
		}
	}
}

func isOpaque(raw string) bool { return strings.HasPrefix(raw, OpaqueTokenPrefix) }
