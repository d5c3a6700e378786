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

	"net/http"

	"github.com/go-jose/go-jose/v4"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

type signingKeyDoc struct {
	ID              string    `bson:"_id"`
	PrivatePKCS8PEM string    `bson:"private_pkcs8_pem"`
	CreatedAt       time.Time `bson:"created_at"`
}

// keyring holds the signing keys; it signs with the newest and publishes
// the older ones until every token they signed has expired, so tokens
// signed before a rotation still verify.
type keyring struct {
	signer   *jwsSigner // access tokens, typ at+jwt (RFC 9068)
	idSigner *jwsSigner // ID tokens, typ JWT
	keys     []publishedKey
	// newestAt is when the newest key was created.
	newestAt time.Time
}

type publishedKey struct {
	jwk jose.JSONWebKey
	// retiredAt is when the next key took over; zero for the newest.
	retiredAt time.Time
}

// jwks is the published set at now: the newest key and every older one
// whose tokens may still be alive (retention after its retirement).
func (kr *keyring) jwks(now time.Time, retention time.Duration) jose.JSONWebKeySet {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range kr.keys {
		if k.retiredAt.IsZero() || now.Before(k.retiredAt.Add(retention)) {
			set.Keys = append(set.Keys, k.jwk)
		}
	}
	return set
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
	for i, d := range docs { // sorted oldest first
		key, err := parseKey(d.PrivatePKCS8PEM)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", d.ID, err)
		}
		pk := publishedKey{jwk: jose.JSONWebKey{Key: key.Public(), KeyID: d.ID, Algorithm: string(jose.ES256), Use: "sig"}}
		if i+1 < len(docs) {
			pk.retiredAt = docs[i+1].CreatedAt
		}
		kr.keys = append(kr.keys, pk)
		newest, newestID, kr.newestAt = key, d.ID, d.CreatedAt
	}
	kr.signer = newJWSSigner(newest, newestID, "at+jwt")
	kr.idSigner = newJWSSigner(newest, newestID, "JWT")
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

// RotateSigningKey creates a new signing key and signs with it from now on,
// here at once and on other replicas when they hear of it on NATS (or at
// their next start). The previous key stays in the JWKS until every token
// it signed has expired. Verifiers fetch the JWKS again when they meet an
// unknown kid, so tokens of the new key verify everywhere.
func (s *Server) RotateSigningKey(ctx context.Context) error {
	// Keys are ordered by creation time; a new one is always the newest,
	// even if clocks disagree.
	now := s.now().UTC().Truncate(time.Millisecond)
	if prev := s.keys.Load().newestAt; !now.After(prev) {
		now = prev.Add(time.Millisecond)
	}
	doc, err := newKeyDoc(fmt.Sprintf("es256-%020d-%s", now.UnixNano(), randomToken(3)), now)
	if err != nil {
		return err
	}
	if _, err := s.signingKeys.InsertOne(ctx, doc); err != nil {
		return fmt.Errorf("store signing key: %w", err)
	}
	if err := s.reloadKeys(ctx); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "signing key rotated", "kid", doc.ID)
	if nc := s.cfg.NATS; nc != nil {
		if err := nc.Publish(keysRotatedSubject, []byte(doc.ID)); err != nil {
			s.log.WarnContext(ctx, "announce key rotation failed", "err", err)
		}
	}
	return nil
}

// keysRotatedSubject tells authz replicas to reload the signing keys.
const keysRotatedSubject = "ocfcloud.authz.keys.rotated"

func (s *Server) reloadKeys(ctx context.Context) error {
	kr, err := loadKeyring(ctx, s.signingKeys, s.now())
	if err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	s.keys.Store(kr)
	return nil
}

// keyRetention is how long a replaced key stays published: the longest
// lifetime of anything it signed, plus clock skew.
func (s *Server) keyRetention() time.Duration { return s.maxAccessTTL() }

// handleRotateSigningKey lets an administrator rotate the signing key.
func (s *Server) handleRotateSigningKey(w http.ResponseWriter, r *http.Request) {
	admin, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	if err := s.RotateSigningKey(r.Context()); err != nil {
		s.problemInternal(w, r, "rotate signing key", err)
		return
	}
	s.audit(AuditEvent{Type: AuditSigningKeyRotated, Success: true, ActorID: admin.ID, SourceIP: clientIP(r)})
	httpx.WriteJSON(w, http.StatusOK, s.keys.Load().jwks(s.now(), s.keyRetention()))
}

// AuditSigningKeyRotated records a signing key rotation.
const AuditSigningKeyRotated = "signing_key_rotated"
