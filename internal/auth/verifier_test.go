package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestVerifierFailsClosedUntilRevocationsAreLoaded(t *testing.T) {
	// A database nobody answers on: the stored revocations never load.
	c, err := mongo.Connect(options.Client().ApplyURI("mongodb://127.0.0.1:1").SetServerSelectionTimeout(50 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Disconnect(context.Background()) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := NewVerifier(ctx, "http://127.0.0.1:1", "http://127.0.0.1:1/jwks", nil, WithRevocations(nil, c.Database("x")))
	defer v.Close()
	vctx, vcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer vcancel()
	if _, err := v.Verify(vctx, "a.b.c"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify before the revocations are loaded: %v", err)
	}
}

func TestOpaqueTokensAreCheckedInMemory(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(context.Background(), "http://127.0.0.1:1", "http://127.0.0.1:1/jwks", func() time.Time { return now })
	v.opaque = newOpaqueTokens() // as WithRevocations would
	raw := OpaqueTokenPrefix + "token-one"
	v.AddOpaqueToken(OpaqueToken{ID: "t1", Hash: HashOpaqueToken(raw), ClientID: "app", UserID: "u1", Scope: "r:resources:*",
		CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)})
	c, err := v.Verify(context.Background(), raw)
	if err != nil || c.ClientID != "app" || c.Subject != "u1" || !c.HasScope(ScopeReadResources) || c.ID != "t1" {
		t.Fatalf("claims %+v, %v", c, err)
	}
	if _, err := v.Verify(context.Background(), OpaqueTokenPrefix+"unknown"); err == nil {
		t.Fatal("an unknown opaque token verified")
	}
	now = now.Add(2 * time.Hour)
	var expired *ExpiredTokenError
	if _, err := v.Verify(context.Background(), raw); !errors.As(err, &expired) || expired.Use.TokenID != "t1" || expired.Use.ClientID != "app" {
		t.Fatalf("expired token: %v", err)
	}
	now = now.Add(-2 * time.Hour)
	v.Revoke(Revocation{TokenHash: HashOpaqueToken(raw), ExpiresAt: now.Add(time.Hour)})
	if _, err := v.Verify(context.Background(), raw); err == nil {
		t.Fatal("a revoked opaque token verified")
	}
}

func TestScopesAreWholeSpaceSeparatedWords(t *testing.T) {
	for _, c := range []struct {
		scope, want string
		has         bool
	}{
		{"r:resources:* w:resources:*", "w:resources:*", true},
		{"  r:resources:*\tw:resources:*  ", "r:resources:*", true},
		{"r:resources:*x", "r:resources:*", false},
		{"xr:resources:*", "r:resources:*", false},
		{"r:resources", "r:resources:*", false},
		{"", "r:resources:*", false},
		{"   ", "", false},
		{"a\u00a0b", "b", true}, // any Unicode space separates, as strings.Fields
	} {
		if got := (&Claims{Scope: c.scope}).HasScope(c.want); got != c.has {
			t.Errorf("scope %q has %q: %v, want %v", c.scope, c.want, got, c.has)
		}
	}
}
