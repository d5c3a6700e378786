package authz

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// runRefreshStoreTests is the conformance suite of refreshStore: every
// implementation must pass it against a real server.
func runRefreshStoreTests(t *testing.T, newStore func(t *testing.T) refreshStore) {
	ctx := context.Background()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	tok := func(hash, chain, user, client string, started time.Time) refreshTokenDoc {
		return refreshTokenDoc{
			Hash: hash, UserID: user, ClientID: client, Scope: "offline_access", CreatedAt: started,
			ExpiresAt: started.Add(time.Hour), ChainID: chain, ChainStartedAt: started,
		}
	}

	t.Run("create get remove", func(t *testing.T) {
		st := newStore(t)
		a := tok("h-a", "c-a", "u1", "cli", now)
		if err := st.create(ctx, a); err != nil {
			t.Fatal(err)
		}
		got, err := st.get(ctx, "h-a")
		if err != nil || got.ChainID != "c-a" || got.UserID != "u1" || !got.ExpiresAt.Equal(a.ExpiresAt) {
			t.Fatalf("get: %+v %v", got, err)
		}
		if _, err := st.get(ctx, "h-unknown"); !errors.Is(err, errTokenGone) {
			t.Fatalf("unknown token: %v", err)
		}
		if err := st.remove(ctx, "h-a"); err != nil {
			t.Fatal(err)
		}
		if err := st.remove(ctx, "h-a"); !errors.Is(err, errTokenGone) {
			t.Fatalf("second remove: %v", err)
		}
	})

	t.Run("rotate remembers the old token", func(t *testing.T) {
		st := newStore(t)
		a := tok("h-1", "chain", "u1", "cli", now)
		if err := st.create(ctx, a); err != nil {
			t.Fatal(err)
		}
		next := tok("h-2", "chain", "u1", "cli", now)
		next.CreatedAt = now.Add(time.Minute)
		if err := st.rotate(ctx, &a, next, now.Add(time.Minute), now.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.get(ctx, "h-1"); !errors.Is(err, errTokenGone) {
			t.Fatalf("rotated token still live: %v", err)
		}
		if _, err := st.get(ctx, "h-2"); err != nil {
			t.Fatalf("successor: %v", err)
		}
		m, err := st.rotated(ctx, "h-1")
		if err != nil || m.ChainID != "chain" || !m.RotatedAt.Equal(now.Add(time.Minute)) || m.UserID != "u1" {
			t.Fatalf("rotated: %+v %v", m, err)
		}
		if _, err := st.rotated(ctx, "h-2"); !errors.Is(err, errTokenGone) {
			t.Fatalf("a live token is remembered as rotated: %v", err)
		}
		if err := st.rotate(ctx, &a, tok("h-3", "chain", "u1", "cli", now), now, now.Add(time.Hour)); !errors.Is(err, errTokenGone) {
			t.Fatalf("second rotation of one token: %v", err)
		}
	})

	t.Run("100 concurrent rotations have exactly one winner", func(t *testing.T) {
		st := newStore(t)
		a := tok("h-race", "chain-race", "u1", "cli", now)
		if err := st.create(ctx, a); err != nil {
			t.Fatal(err)
		}
		const n = 100
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				old := a
				errs[i] = st.rotate(ctx, &old, tok(fmt.Sprintf("h-next-%d", i), "chain-race", "u1", "cli", now), now, now.Add(time.Hour))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("rotations %d and %d both won", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, errTokenGone):
				t.Errorf("loser %d: %v", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no rotation won")
		}
		live, err := st.listUser(ctx, "u1")
		if err != nil || len(live) != 1 || live[0].Hash != fmt.Sprintf("h-next-%d", winner) {
			t.Fatalf("live tokens after the race: %+v %v", live, err)
		}
	})

	t.Run("revoking a chain ends it and stops a racing rotation", func(t *testing.T) {
		st := newStore(t)
		a := tok("h-c1", "chain-x", "u1", "cli", now)
		b := tok("h-other", "chain-y", "u1", "cli", now)
		for _, d := range []refreshTokenDoc{a, b} {
			if err := st.create(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		live, err := st.revokeChain(ctx, "chain-x", now.Add(time.Hour))
		if err != nil || len(live) != 1 || live[0].Hash != "h-c1" {
			t.Fatalf("revokeChain: %+v %v", live, err)
		}
		if _, err := st.get(ctx, "h-c1"); !errors.Is(err, errTokenGone) {
			t.Fatalf("token of a revoked chain: %v", err)
		}
		if _, err := st.get(ctx, "h-other"); err != nil {
			t.Fatalf("another chain was hit: %v", err)
		}
		// A rotation that read the token before the revocation and deletes
		// it after must not leave a successor behind. Simulate it by
		// re-creating the token, as if the revocation ran between read and
		// delete.
		if err := st.create(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := st.rotate(ctx, &a, tok("h-c2", "chain-x", "u1", "cli", now), now, now.Add(time.Hour)); !errors.Is(err, errTokenGone) {
			t.Fatalf("rotation in a revoked chain: %v", err)
		}
		if _, err := st.get(ctx, "h-c2"); !errors.Is(err, errTokenGone) {
			t.Fatalf("successor in a revoked chain: %v", err)
		}
	})

	t.Run("list by user oldest chain first, remove by client, sweep", func(t *testing.T) {
		st := newStore(t)
		docs := []refreshTokenDoc{
			tok("h-new", "c3", "u1", "cli", now.Add(2*time.Minute)),
			tok("h-old", "c1", "u1", "web", now),
			tok("h-mid", "c2", "u1", "cli", now.Add(time.Minute)),
			tok("h-u2", "c4", "u2", "cli", now),
		}
		device := tok("h-dev", "c5", "u1", "ocfcloud-device", now)
		device.ExpiresAt = time.Time{}
		for _, d := range append(docs, device) {
			if err := st.create(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		list, err := st.listUser(ctx, "u1")
		if err != nil || len(list) != 4 || list[0].Hash != "h-old" || list[len(list)-1].Hash != "h-new" {
			t.Fatalf("listUser: %+v %v", list, err)
		}
		if err := st.removeClient(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.get(ctx, "h-old"); !errors.Is(err, errTokenGone) {
			t.Fatalf("token of a removed client: %v", err)
		}
		if err := st.sweep(ctx, now.Add(90*time.Minute)); err != nil {
			t.Fatal(err)
		}
		list, _ = st.listUser(ctx, "u1")
		if len(list) != 1 || list[0].Hash != "h-dev" {
			t.Fatalf("after the sweep: %+v", list)
		}
	})
}

func TestMongoRefreshStoreConformance(t *testing.T) {
	runRefreshStoreTests(t, func(t *testing.T) refreshStore {
		st, err := newMongoRefreshStore(context.Background(), platform.TestMongo(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}
