package auth

import (
	"testing"
	"time"
)

func TestRevokedSetCoversTokensByIDClientAndUser(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rs := newRevocations()
	tok := func(jti, client, sub string, iat time.Time) *Claims {
		return &Claims{ID: jti, ClientID: client, Subject: sub, IssuedAt: iat}
	}
	rs.add(Revocation{TokenID: "j1", ExpiresAt: now.Add(time.Minute)}, now)
	rs.add(Revocation{ClientID: "app", IssuedBefore: now, ExpiresAt: now.Add(time.Hour)}, now)
	rs.add(Revocation{UserID: "u1", IssuedBefore: now, ExpiresAt: now.Add(time.Hour)}, now)
	// An older, shorter replay must not shorten the client's cutoff.
	rs.add(Revocation{ClientID: "app", IssuedBefore: now.Add(-time.Hour), ExpiresAt: now.Add(time.Minute)}, now)

	for _, tc := range []struct {
		name string
		c    *Claims
		want bool
	}{
		{"revoked jti", tok("j1", "x", "u9", now), true},
		{"other jti", tok("j2", "x", "u9", now), false},
		{"client token of the cutoff second", tok("j3", "app", "u9", now), true},
		{"client token before", tok("j3", "app", "u9", now.Add(-time.Minute)), true},
		{"client token after", tok("j3", "app", "u9", now.Add(time.Second)), false},
		{"user token before", tok("j4", "cli", "u1", now.Add(-time.Second)), true},
		{"user token after", tok("j4", "cli", "u1", now.Add(time.Second)), false},
	} {
		if got := rs.revoked(tc.c); got != tc.want {
			t.Errorf("%s: revoked = %v, want %v", tc.name, got, tc.want)
		}
	}

	// Entries go once every token they cover has expired.
	later := now.Add(2 * time.Hour)
	rs.add(Revocation{TokenID: "j9", ExpiresAt: later.Add(time.Minute)}, later)
	if n := rs.size(); n != 1 {
		t.Errorf("%d entries after expiry, want 1", n)
	}
}

func TestRevocationNeedsSubjectAndExpiry(t *testing.T) {
	for _, r := range []Revocation{
		{},
		{ClientID: "app", ExpiresAt: time.Now()},
		{TokenID: "j"},
	} {
		if r.Validate() == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	rs := newRevocations()
	rs.add(Revocation{ClientID: "app", ExpiresAt: time.Now().Add(time.Hour)}, time.Now())
	if rs.size() != 0 {
		t.Error("an invalid revocation was kept")
	}
}
