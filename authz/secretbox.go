package authz

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// secretBox encrypts client secrets with AES-256-GCM so that their owner can
// reveal them later. Verification never decrypts: it compares SHA-256 hashes.
// The key lives in MongoDB (collection secret_keys), generated on first start;
// whoever can read that collection can read the secrets, which is the price
// of "reveal" (seeds 000 and 001) and is written down in docs/AUTHZ.md.
type secretBox struct {
	aead cipher.AEAD
}

type secretKeyDoc struct {
	ID        string    `bson:"_id"`
	Key       []byte    `bson:"key"`
	CreatedAt time.Time `bson:"created_at"`
}

// secretKeyID is fixed, so concurrent first starts insert one key between
// them and all load the same one.
const secretKeyID = "aes256gcm-1"

func loadSecretBox(ctx context.Context, coll *mongo.Collection, now time.Time) (*secretBox, error) {
	var doc secretKeyDoc
	err := coll.FindOne(ctx, bson.M{"_id": secretKeyID}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		if _, err := coll.InsertOne(ctx, secretKeyDoc{ID: secretKeyID, Key: key, CreatedAt: now.UTC()}); err != nil && !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("store secret key: %w", err)
		}
		err = coll.FindOne(ctx, bson.M{"_id": secretKeyID}).Decode(&doc)
	}
	if err != nil {
		return nil, fmt.Errorf("load secret key: %w", err)
	}
	if len(doc.Key) != 32 {
		return nil, errors.New("secret key is not 32 bytes")
	}
	block, err := aes.NewCipher(doc.Key)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return &secretBox{aead: aead}, nil
}

// seal encrypts plain bound to aad (the app id), so a ciphertext copied
// onto another app does not decrypt.
func (b *secretBox) seal(plain, aad string) []byte {
	nonce := make([]byte, b.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return b.aead.Seal(nonce, nonce, []byte(plain), []byte(aad))
}

func (b *secretBox) open(sealed []byte, aad string) (string, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("sealed secret too short")
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], []byte(aad))
	if err != nil {
		return "", errors.New("sealed secret does not decrypt")
	}
	return string(plain), nil
}
