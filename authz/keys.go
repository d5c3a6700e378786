package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

type signingKeyDoc struct {
	ID              string    `bson:"_id"`
	PrivatePKCS8PEM string    `bson:"private_pkcs8_pem"`
	CreatedAt       time.Time `bson:"created_at"`
}

// keyring holds every signing key found at start; it signs with the newest and
// publishes all of them, so tokens signed before a rotation still verify.
type keyring struct {
	signer jose.Signer
	jwks   jose.JSONWebKeySet
}

// loadKeyring loads the signing keys, creating the first one if there is
// none. The first key's id is fixed, so when two processes start on an empty
// database at once only one insert succeeds and both reload the same key.
func loadKeyring(ctx context.Context, coll *mongo.Collection, now time.Time) (*keyring, error) {
	docs, err := loadKeyDocs(ctx, coll)
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		doc, err := newKeyDoc(fmt.Sprintf("es256-%d", len(docs)+1), now)
		if err != nil {
			return nil, err
		}
		if _, err := coll.InsertOne(ctx, doc); err != nil && !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("store signing key: %w", err)
		}
		if docs, err = loadKeyDocs(ctx, coll); err != nil {
			return nil, err
		}
		if len(docs) == 0 {
			return nil, errors.New("signing key vanished after insert")
		}
	}
	kr := &keyring{}
	var newest *ecdsa.PrivateKey
	var newestID string
	for _, d := range docs { // sorted oldest first
		key, err := parseKey(d.PrivatePKCS8PEM)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", d.ID, err)
		}
		kr.jwks.Keys = append(kr.jwks.Keys, jose.JSONWebKey{
			Key: key.Public(), KeyID: d.ID, Algorithm: string(jose.ES256), Use: "sig",
		})
		newest, newestID = key, d.ID
	}
	kr.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: newest, KeyID: newestID}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	return kr, nil
}

func loadKeyDocs(ctx context.Context, coll *mongo.Collection) ([]signingKeyDoc, error) {
	cur, err := coll.Find(ctx, bson.M{})
	if err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	var docs []signingKeyDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	slices.SortFunc(docs, func(a, b signingKeyDoc) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return docs, nil
}

func newKeyDoc(id string, now time.Time) (signingKeyDoc, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return signingKeyDoc{}, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return signingKeyDoc{}, fmt.Errorf("encode signing key: %w", err)
	}
	return signingKeyDoc{
		ID:              id,
		PrivatePKCS8PEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		CreatedAt:       now.UTC(),
	}, nil
}

func parseKey(pemText string) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PKCS #8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("not a P-256 key")
	}
	return ec, nil
}
