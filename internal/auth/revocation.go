package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// RevokedSubject is the NATS subject on which authz announces revocations,
// one JSON Revocation per message, to every resource server.
const RevokedSubject = "ocfcloud.authz.revoked"

// RevocationsCollection is the MongoDB collection where authz keeps every
// revocation that still matters, so a restarted resource server starts with
// the current set.
const RevocationsCollection = "revocations"

// Revocation says which access tokens must no longer be accepted. Exactly one
// kind applies, in this order:
//   - TokenID: the JWT with that jti (ClientID and UserID only describe it);
//   - TokenHash: the admin-issued opaque token with that SHA-256 hash (hex);
//   - ClientID: every token of that client issued at or before IssuedBefore
//     (an app was deleted or its secret rotated);
//   - UserID: every token of that user issued at or before IssuedBefore (the
//     user was disabled).
//
// ExpiresAt is when every token it covers has expired; after it the entry is
// dropped.
type Revocation struct {
	TokenID   string `json:"jti,omitempty" bson:"jti,omitempty"`
	TokenHash string `json:"token_hash,omitempty" bson:"token_hash,omitempty"`
	ClientID  string `json:"client_id,omitempty" bson:"client_id,omitempty"`
	UserID    string `json:"user_id,omitempty" bson:"user_id,omitempty"`
	// DeviceID: every token of that device issued at or before IssuedBefore
	// (the device was signed off or offboarded).
	DeviceID     string    `json:"di,omitempty" bson:"di,omitempty"`
	IssuedBefore time.Time `json:"issued_before,omitzero" bson:"issued_before,omitempty"`
	ExpiresAt    time.Time `json:"expires_at" bson:"expires_at"`
}

// Validate reports whether r names something to revoke.
func (r Revocation) Validate() error {
	switch {
	case r.TokenID != "" || r.TokenHash != "":
	case (r.ClientID != "" || r.UserID != "" || r.DeviceID != "") && !r.IssuedBefore.IsZero():
	default:
		return errors.New("revocation names no token, client or user")
	}
	if r.ExpiresAt.IsZero() {
		return errors.New("revocation has no expiry")
	}
	return nil
}

// ErrRevoked means the token was valid but has been revoked.
var ErrRevoked = errors.New("token revoked")

// revocations is the local revoked set of one Verifier. Lookups happen on
// every request and take a read lock only.
type revocations struct {
	mu        sync.RWMutex
	tokens    map[string]time.Time // jti or opaque hash -> expiry
	clients   map[string]cutoff
	users     map[string]cutoff
	devices   map[string]cutoff
	lastPrune time.Time
}

type cutoff struct {
	issuedBefore time.Time
	expiresAt    time.Time
}

func newRevocations() *revocations {
	return &revocations{
		tokens:  make(map[string]time.Time),
		clients: make(map[string]cutoff),
		users:   make(map[string]cutoff),
		devices: make(map[string]cutoff),
	}
}

func (rs *revocations) add(r Revocation, now time.Time) {
	if r.Validate() != nil || !now.Before(r.ExpiresAt) {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	switch {
	case r.TokenID != "":
		rs.tokens["jti:"+r.TokenID] = r.ExpiresAt
	case r.TokenHash != "":
		rs.tokens["hash:"+r.TokenHash] = r.ExpiresAt
	case r.ClientID != "":
		rs.clients[r.ClientID] = merge(rs.clients[r.ClientID], r)
	case r.DeviceID != "":
		rs.devices[r.DeviceID] = merge(rs.devices[r.DeviceID], r)
	default:
		rs.users[r.UserID] = merge(rs.users[r.UserID], r)
	}
	if now.Sub(rs.lastPrune) > time.Minute || now.Before(rs.lastPrune) {
		rs.pruneLocked(now)
	}
}

// merge keeps the later cutoff and the later expiry, so replays and
// out-of-order deliveries never shorten a revocation.
func merge(c cutoff, r Revocation) cutoff {
	if r.IssuedBefore.After(c.issuedBefore) {
		c.issuedBefore = r.IssuedBefore
	}
	if r.ExpiresAt.After(c.expiresAt) {
		c.expiresAt = r.ExpiresAt
	}
	return c
}

func (rs *revocations) pruneLocked(now time.Time) {
	rs.lastPrune = now
	for k, exp := range rs.tokens {
		if !now.Before(exp) {
			delete(rs.tokens, k)
		}
	}
	for _, m := range []map[string]cutoff{rs.clients, rs.users, rs.devices} {
		for k, c := range m {
			if !now.Before(c.expiresAt) {
				delete(m, k)
			}
		}
	}
}

// revoked reports whether c is covered. Token issue times are whole seconds,
// so a cutoff covers every token issued in its second or before.
func (rs *revocations) revoked(c *Claims) bool {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	if c.ID != "" && rs.hasToken("jti:", c.ID) {
		return true
	}
	if c.tokenHash != "" && rs.hasToken("hash:", c.tokenHash) {
		return true
	}
	if co, ok := rs.clients[c.ClientID]; ok && !c.IssuedAt.After(co.issuedBefore) {
		return true
	}
	if co, ok := rs.users[c.Subject]; ok && !c.IssuedAt.After(co.issuedBefore) {
		return true
	}
	if c.DeviceID != "" {
		if co, ok := rs.devices[c.DeviceID]; ok && !c.IssuedAt.After(co.issuedBefore) {
			return true
		}
	}
	return false
}

// hasToken looks prefix+id up in rs.tokens with the key built on the
// stack: a concatenation longer than 32 bytes (a token hash is 64) would be
// a new string for every request.
func (rs *revocations) hasToken(prefix, id string) bool {
	var buf [96]byte
	k := append(append(buf[:0], prefix...), id...)
	_, ok := rs.tokens[string(k)]
	return ok
}

func (rs *revocations) size() int {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	return len(rs.tokens) + len(rs.clients) + len(rs.users) + len(rs.devices)
}

// LoadRevocations reads every unexpired revocation from coll.
func LoadRevocations(ctx context.Context, coll *mongo.Collection, now time.Time) ([]Revocation, error) {
	cur, err := coll.Find(ctx, bson.M{"expires_at": bson.M{"$gt": now.UTC()}})
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	var out []Revocation
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	return out, nil
}

// startRevocations subscribes to RevokedSubject first and then loads the
// stored set, so nothing published in between is missed. Until the load
// succeeds Verify fails closed.
func (v *Verifier) startRevocations(ctx context.Context, nc *nats.Conn, db *mongo.Database) {
	v.ready = make(chan struct{})
	if nc != nil {
		sub, err := nc.Subscribe(RevokedSubject, func(m *nats.Msg) {
			var r Revocation
			if json.Unmarshal(m.Data, &r) == nil {
				v.Revoke(r)
			}
		})
		if err != nil {
			v.startErr = fmt.Errorf("subscribe %s: %w", RevokedSubject, err)
			close(v.ready)
			return
		}
		v.subs = append(v.subs, sub)
		if err := v.subscribeTokens(nc); err != nil {
			v.startErr = err
			close(v.ready)
			return
		}
	}
	if db == nil {
		close(v.ready)
		return
	}
	go func() {
		defer close(v.ready)
		backoff := 100 * time.Millisecond
		for {
			if v.loadStored(ctx, db) == nil {
				return
			}
			select {
			case <-ctx.Done():
				v.startErr = fmt.Errorf("load revocations: %w", ctx.Err())
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

// loadStored loads the stored revocations and admin-issued tokens.
func (v *Verifier) loadStored(ctx context.Context, db *mongo.Database) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := LoadRevocations(ctx, db.Collection(RevocationsCollection), v.now())
	if err != nil {
		return err
	}
	for _, r := range list {
		v.Revoke(r)
	}
	return v.opaque.load(ctx, db, v.now())
}

// Revoke adds r to the local revoked set. authz calls it directly for its
// own verifier; other processes get it through RevokedSubject.
func (v *Verifier) Revoke(r Revocation) {
	v.revoked.add(r, v.now())
	if r.TokenHash != "" && v.opaque != nil {
		v.opaque.drop(r.TokenHash)
	}
}

// RevokedCount is the number of revocations held in memory, for metrics and
// tests.
func (v *Verifier) RevokedCount() int { return v.revoked.size() }

// waitReady blocks until the stored revocations are loaded.
func (v *Verifier) waitReady(ctx context.Context) error {
	if v.ready == nil {
		return nil
	}
	select {
	case <-v.ready:
		return v.startErr
	default:
	}
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-v.ready:
		return v.startErr
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("revocation list not loaded yet")
	}
}
