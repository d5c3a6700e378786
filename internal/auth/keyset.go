package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// minKeyRefresh is the shortest time between two fetches of the JWKS.
const minKeyRefresh = 10 * time.Second

// keySet verifies token signatures with the issuer's keys from its JWKS URL.
//
// go-oidc's RemoteKeySet fetches the JWKS again whenever a signature does
// not verify, so every forged token costs an HTTP round trip to authz: a
// flood of them becomes a flood of JWKS requests. Here the keys are fetched
// again only for a key id not seen yet (authz rotated its key), at most
// once per minKeyRefresh, and one fetch serves all requests waiting for it.
// A known key id with a bad signature is a forgery and is refused at once.
type keySet struct {
	url    string
	client *http.Client
	ctx    context.Context // bounds fetches; a request's context only bounds its wait

	mu       sync.Mutex
	keys     []jose.JSONWebKey
	fetched  time.Time     // last fetch attempt
	inflight chan struct{} // closed when the running fetch ends
	fetchErr error
}

// newKeySet fetches from url with the HTTP client that ctx carries
// (oidc.ClientContext), else with a client of its own.
func newKeySet(ctx context.Context, url string) *keySet {
	client, ok := ctx.Value(oauth2.HTTPClient).(*http.Client)
	if !ok || client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &keySet{url: url, client: client, ctx: ctx}
}

// verify checks tok's signature with the key it names.
func (k *keySet) verify(ctx context.Context, tok *es256Token) error {
	kid := tok.kid
	keys, known := k.lookup(kid)
	if !known {
		if err := k.refresh(ctx); err != nil {
			return err
		}
		if keys, known = k.lookup(kid); !known {
			return fmt.Errorf("unknown signing key %q", kid)
		}
	}
	for _, key := range keys {
		if tok.verify(key.Key) {
			return nil
		}
	}
	return errors.New("token signature does not verify")
}

// lookup returns the keys a token with kid may be signed with.
func (k *keySet) lookup(kid string) ([]jose.JSONWebKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []jose.JSONWebKey
	for _, key := range k.keys {
		if kid == "" || key.KeyID == kid {
			out = append(out, key)
		}
	}
	return out, len(out) > 0
}

// refresh fetches the JWKS unless it was fetched less than minKeyRefresh
// ago (unless no fetch ever succeeded), and waits for a fetch in flight.
func (k *keySet) refresh(ctx context.Context) error {
	k.mu.Lock()
	if k.inflight == nil {
		// After a good fetch, wait minKeyRefresh for the next; after a
		// failed one (authz unreachable), a second.
		window := time.Second
		if k.fetchErr == nil {
			window = minKeyRefresh
		}
		if !k.fetched.IsZero() && time.Since(k.fetched) < window {
			err := k.fetchErr
			k.mu.Unlock()
			return err
		}
		k.inflight = make(chan struct{})
		k.fetched = time.Now()
		go k.fetch(k.inflight)
	}
	wait := k.inflight
	k.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
		return ctx.Err()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetchErr
}

func (k *keySet) fetch(done chan struct{}) {
	keys, err := k.get()
	k.mu.Lock()
	if err == nil {
		k.keys = keys
	}
	k.fetchErr = err
	k.inflight = nil
	k.mu.Unlock()
	close(done)
}

func (k *keySet) get() ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(k.ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch signing keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch signing keys: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("fetch signing keys: %w", err)
	}
	return set.Keys, nil
}
