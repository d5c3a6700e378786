package c2capi

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Level is what a subscription watches.
type Level string

// Subscription levels, one per OCF C2C subscription path.
const (
	LevelDevices  Level = "devices"  // the caller's devices (all devices for an admin)
	LevelDevice   Level = "device"   // one device's links
	LevelResource Level = "resource" // one resource's content
)

// Subscription is one registered webhook. The signingSecret is kept
// encrypted in the database (it is needed to sign, so it cannot be hashed)
// and in plain text only in memory.
type Subscription struct {
	ID    string `bson:"_id" json:"subscriptionId"`
	Owner string `bson:"owner" json:"owner"`
	// Admin records that the subscriber was an administrator: its
	// subscriptions match devices of every owner.
	Admin         bool      `bson:"admin,omitempty" json:"-"`
	Level         Level     `bson:"level" json:"level"`
	DeviceID      string    `bson:"di,omitempty" json:"deviceId,omitempty"`
	Href          string    `bson:"href,omitempty" json:"href,omitempty"`
	EventTypes    []string  `bson:"eventTypes" json:"eventTypes"`
	EventsURL     string    `bson:"eventsUrl" json:"eventsUrl"`
	SealedSecret  []byte    `bson:"secret" json:"-"`
	CreatedAt     time.Time `bson:"createdAt" json:"createdAt"`
	CorrelationID string    `bson:"correlationId,omitempty" json:"-"`
	// Cancelled is set when cancellation starts; the document is deleted
	// once subscription_cancelled has been delivered (or given up on).
	Cancelled    bool   `bson:"cancelled,omitempty" json:"-"`
	CancelReason string `bson:"cancelReason,omitempty" json:"-"`

	secret string
}

// subscriptionCollection is the MongoDB collection of subscriptions.
const subscriptionCollection = "subscriptions"

// subscriptionStore keeps subscriptions in MongoDB. FerretDB has no
// transactions and no atomic find-and-modify, so every write is a single
// insert, update or delete by _id.
type subscriptionStore struct {
	c   *mongo.Collection
	box *secretBox
}

func (s *subscriptionStore) insert(ctx context.Context, sub *Subscription) error {
	sealed, err := s.box.seal(sub.ID, sub.secret)
	if err != nil {
		return err
	}
	sub.SealedSecret = sealed
	if _, err := s.c.InsertOne(ctx, sub); err != nil {
		return fmt.Errorf("store subscription %s: %w", sub.ID, err)
	}
	return nil
}

func (s *subscriptionStore) markCancelled(ctx context.Context, id, reason string) error {
	_, err := s.c.UpdateOne(ctx, bson.M{"_id": id}, bson.M{"$set": bson.M{"cancelled": true, "cancelReason": reason}})
	if err != nil {
		return fmt.Errorf("cancel subscription %s: %w", id, err)
	}
	return nil
}

func (s *subscriptionStore) delete(ctx context.Context, id string) error {
	if _, err := s.c.DeleteOne(ctx, bson.M{"_id": id}); err != nil {
		return fmt.Errorf("delete subscription %s: %w", id, err)
	}
	return nil
}

func (s *subscriptionStore) open(sub *Subscription) error {
	secret, err := s.box.open(sub.ID, sub.SealedSecret)
	if err != nil {
		return fmt.Errorf("subscription %s: %w", sub.ID, err)
	}
	sub.secret = secret
	return nil
}

func (s *subscriptionStore) get(ctx context.Context, id string) (*Subscription, error) {
	var sub Subscription
	if err := s.c.FindOne(ctx, bson.M{"_id": id}).Decode(&sub); err != nil {
		return nil, err
	}
	return &sub, s.open(&sub)
}

func (s *subscriptionStore) all(ctx context.Context) ([]*Subscription, error) {
	cur, err := s.c.Find(ctx, bson.M{})
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	var out []*Subscription
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	for _, sub := range out {
		if err := s.open(sub); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// secretBox encrypts signing secrets with AES-256-GCM. The subscription id
// is the associated data, so a sealed secret copied onto another
// subscription does not open.
type secretBox struct {
	aead cipher.AEAD
}

func newSecretBox(key []byte) (*secretBox, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("webhook secrets key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &secretBox{aead: aead}, nil
}

func (b *secretBox) seal(id, secret string) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return b.aead.Seal(nonce, nonce, []byte(secret), []byte(id)), nil
}

func (b *secretBox) open(id string, sealed []byte) (string, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("sealed secret too short")
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
	if err != nil {
		return "", errors.New("signing secret does not decrypt: wrong webhook secrets key?")
	}
	return string(plain), nil
}

// LoadOrCreateSecretsKey reads the webhook secrets key (64 hex characters)
// from path, creating it with a new random key (mode 0600) on first use.
// The all-in-one server keeps it under its data directory, beside but not
// inside the database.
func LoadOrCreateSecretsKey(path string) ([]byte, error) {
	if raw, err := os.ReadFile(path); err == nil {
		return ParseSecretsKey(strings.TrimSpace(string(raw)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("webhook secrets key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("webhook secrets key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another process won the race
		return LoadOrCreateSecretsKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook secrets key: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("webhook secrets key: %w", werr)
	}
	return key, nil
}

// ReadSecretsKeyFile reads a key that must already exist (a cluster's
// replicas must all use the same key, so none may invent its own).
func ReadSecretsKeyFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secrets key: %w", err)
	}
	return ParseSecretsKey(strings.TrimSpace(string(raw)))
}

// ParseSecretsKey decodes a 32-byte key given as 64 hex characters or as
// base64 (the form a Kubernetes Secret or a flag carries).
func ParseSecretsKey(s string) ([]byte, error) {
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	return nil, errors.New("webhook secrets key must be 32 bytes as 64 hex characters or base64")
}
