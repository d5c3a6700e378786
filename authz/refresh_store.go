package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	collRefreshRotated = "refresh_rotated"
	// collRevokedChains is separate from collRefreshRotated and small, because
	// every rotation reads it and FerretDB scans a collection per query.
	collRevokedChains = "refresh_revoked_chains"
)

// refreshTokenDoc is a live refresh token. Every token belongs to a chain:
// the first token of a grant starts one, each rotation replaces the chain's
// one live token with its successor.
type refreshTokenDoc struct {
	Hash           string    `bson:"_id"`
	UserID         string    `bson:"user_id"`
	ClientID       string    `bson:"client_id"`
	DeviceID       string    `bson:"device_id"`
	Scope          string    `bson:"scope"`
	CreatedAt      time.Time `bson:"created_at"`
	ExpiresAt      time.Time `bson:"expires_at"` // zero: never
	ChainID        string    `bson:"chain_id"`
	ChainStartedAt time.Time `bson:"chain_started_at"`
	// The access token issued with this refresh token, revoked with the
	// chain when a rotated token is reused.
	AccessJTI       string    `bson:"access_jti,omitempty"`
	AccessExpiresAt time.Time `bson:"access_expires_at,omitempty"`
	Audience        string    `bson:"audience,omitempty"`
}

// rotatedTokenDoc remembers a rotated refresh token, so that its reuse is
// recognized (RFC 9700 §4.14.2) and can revoke the chain.
type rotatedTokenDoc struct {
	Hash      string    `bson:"_id"`
	ChainID   string    `bson:"chain_id"`
	UserID    string    `bson:"user_id"`
	ClientID  string    `bson:"client_id"`
	RotatedAt time.Time `bson:"rotated_at"`
	ExpiresAt time.Time `bson:"expires_at"`
}

// errTokenGone means a refresh token is unknown, expired or already rotated.
var errTokenGone = errors.New("refresh token is invalid, expired or already used")

// refreshStore keeps refresh tokens. Its one implementation is on MongoDB;
// runRefreshStoreTests is the conformance suite any other must pass.
type refreshStore interface {
	// create stores a new token.
	create(ctx context.Context, t refreshTokenDoc) error
	// get returns the token with hash, expired or not, or errTokenGone.
	get(ctx context.Context, hash string) (*refreshTokenDoc, error)
	// rotate replaces old with next. Of any number of concurrent rotations
	// of one token exactly one succeeds; the others get errTokenGone.
	rotate(ctx context.Context, old *refreshTokenDoc, next refreshTokenDoc, rotatedAt, rememberUntil time.Time) error
	// rotated returns what is remembered of a rotated token, or errTokenGone.
	rotated(ctx context.Context, hash string) (*rotatedTokenDoc, error)
	// remove deletes one token; errTokenGone if it was not there.
	remove(ctx context.Context, hash string) error
	// revokeChain deletes the chain's live tokens and returns them; a
	// rotation of the chain racing it fails, until rememberUntil.
	revokeChain(ctx context.Context, chainID string, rememberUntil time.Time) ([]refreshTokenDoc, error)
	// removeClient deletes every token of a client.
	removeClient(ctx context.Context, clientID string) error
	// removeDevice deletes every token of a device (it was unregistered).
	removeDevice(ctx context.Context, deviceID string) error
	// listUser returns the user's live tokens, oldest chain first.
	listUser(ctx context.Context, userID string) ([]refreshTokenDoc, error)
	// sweep deletes what expired before now.
	sweep(ctx context.Context, now time.Time) error
}

type mongoRefreshStore struct {
	tokens      *mongo.Collection
	rotatedColl *mongo.Collection
	chains      *mongo.Collection // revoked chains
}

func newMongoRefreshStore(ctx context.Context, db *mongo.Database) (*mongoRefreshStore, error) {
	st := &mongoRefreshStore{
		tokens: db.Collection(collRefreshTokens), rotatedColl: db.Collection(collRefreshRotated), chains: db.Collection(collRevokedChains),
	}
	for _, ix := range []struct {
		c    *mongo.Collection
		keys bson.D
		name string
	}{
		{st.tokens, bson.D{{Key: "expires_at", Value: 1}}, "expires_at"},
		{st.tokens, bson.D{{Key: "client_id", Value: 1}}, "client_id"},
		{st.tokens, bson.D{{Key: "user_id", Value: 1}}, "user_id"},
		{st.tokens, bson.D{{Key: "chain_id", Value: 1}}, "chain_id"},
		{st.rotatedColl, bson.D{{Key: "expires_at", Value: 1}}, "expires_at"},
		{st.chains, bson.D{{Key: "expires_at", Value: 1}}, "expires_at"},
	} {
		if _, err := ix.c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.keys, Options: options.Index().SetName(ix.name)}); err != nil {
			return nil, fmt.Errorf("index %s.%s: %w", ix.c.Name(), ix.name, err)
		}
	}
	return st, nil
}

func (st *mongoRefreshStore) create(ctx context.Context, t refreshTokenDoc) error {
	if _, err := st.tokens.InsertOne(ctx, t); err != nil {
		return fmt.Errorf("store refresh token: %w", err)
	}
	return nil
}

func (st *mongoRefreshStore) get(ctx context.Context, hash string) (*refreshTokenDoc, error) {
	var t refreshTokenDoc
	err := st.tokens.FindOne(ctx, bson.M{"_id": hash}).Decode(&t)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, errTokenGone
	}
	if err != nil {
		return nil, fmt.Errorf("find refresh token: %w", err)
	}
	return &t, nil
}

// rotate picks its winner with a delete that must report one deleted
// document: FerretDB re-checks nothing on update, but its delete counts
// truthfully (docs/DECISIONS.md, "One winner on FerretDB"). The marker is
// written before the successor, so a reuse seen after the successor exists
// is always recognized.
func (st *mongoRefreshStore) rotate(ctx context.Context, old *refreshTokenDoc, next refreshTokenDoc, rotatedAt, rememberUntil time.Time) error {
	res, err := st.tokens.DeleteOne(ctx, bson.M{"_id": old.Hash})
	if err != nil {
		return fmt.Errorf("rotate refresh token: %w", err)
	}
	if res.DeletedCount != 1 {
		return errTokenGone
	}
	ctx = context.WithoutCancel(ctx) // the winner finishes what it started
	marker := rotatedTokenDoc{
		Hash: old.Hash, ChainID: next.ChainID, UserID: old.UserID, ClientID: old.ClientID,
		RotatedAt: rotatedAt.UTC(), ExpiresAt: rememberUntil.UTC(),
	}
	if _, err := st.rotatedColl.InsertOne(ctx, marker); err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("remember rotated refresh token: %w", err)
	}
	if _, err := st.tokens.InsertOne(ctx, next); err != nil {
		return fmt.Errorf("store refresh token: %w", err)
	}
	// revokeChain writes its marker before deleting; we check for it after
	// inserting. So either it deletes our successor or we see the marker.
	n, err := st.chains.CountDocuments(ctx, bson.M{"_id": next.ChainID})
	if err != nil {
		return fmt.Errorf("check refresh chain: %w", err)
	}
	if n > 0 {
		_, _ = st.tokens.DeleteOne(ctx, bson.M{"_id": next.Hash})
		return errTokenGone
	}
	return nil
}

func (st *mongoRefreshStore) rotated(ctx context.Context, hash string) (*rotatedTokenDoc, error) {
	var m rotatedTokenDoc
	err := st.rotatedColl.FindOne(ctx, bson.M{"_id": hash}).Decode(&m)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, errTokenGone
	}
	if err != nil {
		return nil, fmt.Errorf("find rotated refresh token: %w", err)
	}
	return &m, nil
}

func (st *mongoRefreshStore) remove(ctx context.Context, hash string) error {
	res, err := st.tokens.DeleteOne(ctx, bson.M{"_id": hash})
	if err != nil {
		return fmt.Errorf("delete refresh token: %w", err)
	}
	if res.DeletedCount != 1 {
		return errTokenGone
	}
	return nil
}

func (st *mongoRefreshStore) revokeChain(ctx context.Context, chainID string, rememberUntil time.Time) ([]refreshTokenDoc, error) {
	marker := rotatedTokenDoc{Hash: chainID, ChainID: chainID, ExpiresAt: rememberUntil.UTC()}
	if _, err := st.chains.InsertOne(ctx, marker); err != nil && !mongo.IsDuplicateKeyError(err) {
		return nil, fmt.Errorf("mark refresh chain revoked: %w", err)
	}
	cur, err := st.tokens.Find(ctx, bson.M{"chain_id": chainID})
	if err != nil {
		return nil, fmt.Errorf("find refresh chain: %w", err)
	}
	var live []refreshTokenDoc
	if err := cur.All(ctx, &live); err != nil {
		return nil, fmt.Errorf("find refresh chain: %w", err)
	}
	// By chain id, not by the hashes just read: a rotation that wins in
	// between inserts a successor that must go too.
	if _, err := st.tokens.DeleteMany(ctx, bson.M{"chain_id": chainID}); err != nil {
		return nil, fmt.Errorf("delete refresh chain: %w", err)
	}
	return live, nil
}

func (st *mongoRefreshStore) removeDevice(ctx context.Context, deviceID string) error {
	if _, err := st.tokens.DeleteMany(ctx, bson.M{"device_id": deviceID}); err != nil {
		return fmt.Errorf("delete refresh tokens of device %s: %w", deviceID, err)
	}
	return nil
}

func (st *mongoRefreshStore) removeClient(ctx context.Context, clientID string) error {
	if _, err := st.tokens.DeleteMany(ctx, bson.M{"client_id": clientID}); err != nil {
		return fmt.Errorf("delete refresh tokens of %s: %w", clientID, err)
	}
	return nil
}

func (st *mongoRefreshStore) listUser(ctx context.Context, userID string) ([]refreshTokenDoc, error) {
	cur, err := st.tokens.Find(ctx, bson.M{"user_id": userID})
	if err != nil {
		return nil, fmt.Errorf("list refresh tokens: %w", err)
	}
	var list []refreshTokenDoc
	if err := cur.All(ctx, &list); err != nil {
		return nil, fmt.Errorf("list refresh tokens: %w", err)
	}
	slices.SortStableFunc(list, func(a, b refreshTokenDoc) int {
		if c := a.ChainStartedAt.Compare(b.ChainStartedAt); c != 0 {
			return c
		}
		return a.CreatedAt.Compare(b.CreatedAt)
	})
	return list, nil
}

func (st *mongoRefreshStore) sweep(ctx context.Context, now time.Time) error {
	expired := bson.M{"expires_at": bson.M{"$lte": now.UTC(), "$gt": time.Unix(0, 0).UTC()}}
	var errs []error
	for _, c := range []*mongo.Collection{st.tokens, st.rotatedColl, st.chains} {
		if _, err := c.DeleteMany(ctx, expired); err != nil {
			errs = append(errs, fmt.Errorf("sweep %s: %w", c.Name(), err))
		}
	}
	return errors.Join(errs...)
}
