package gatewaybench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// backend is what the gateway talks to, without the rest of the cloud:
// embedded NATS with the event stream, and a token endpoint that accepts
// every code and issues real ES256 JWTs (verified by the gateway through
// JWKS as in production). It keeps authz's database and rate limits out of
// the numbers, which measure the gateway.
type backendServer struct {
	nats    *platform.NATS
	natsDir string
	http    *http.Server
	ln      net.Listener
	key     *ecdsa.PrivateKey
	issuer  string
	n       atomic.Int64
}

func startBackendServer(ctx context.Context) (*backendServer, error) {
	dir, err := os.MkdirTemp("", "gatewaybench-nats-")
	if err != nil {
		return nil, err
	}
	n, err := platform.StartNATS(platform.NATSOptions{StoreDir: dir})
	if err != nil {
		return nil, err
	}
	b := &backendServer{nats: n, natsDir: dir}
	nc, err := nats.Connect(n.URL())
	if err != nil {
		b.close()
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.close()
		return nil, err
	}
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{Memory: true, MaxAge: time.Hour}); err != nil {
		b.close()
		return nil, err
	}
	if b.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		b.close()
		return nil, err
	}
	if b.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.close()
		return nil, err
	}
	b.issuer = "http://" + b.ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", b.token)
	mux.HandleFunc("GET /jwks", b.jwks)
	b.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.http.Serve(b.ln) }()
	return b, nil
}

func (b *backendServer) close() {
	if b.http != nil {
		_ = b.http.Close()
	}
	if b.nats != nil {
		b.nats.Shutdown()
	}
	_ = os.RemoveAll(b.natsDir)
}

const benchUser = "6d1f7e1c-0000-4000-8000-0000000000b1"

// token answers the authorization_code and refresh_token grants.
func (b *backendServer) token(w http.ResponseWriter, r *http.Request) {
	di := r.PostFormValue("device_id")
	at, err := b.mint(di)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": at, "refresh_token": fmt.Sprintf("r-%d", b.n.Add(1)),
		"expires_in": 3600, "user_id": benchUser, "token_type": "Bearer",
	})
}

// mint signs a device access token for di.
func (b *backendServer) mint(di string) (string, error) {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"ES256","kid":"bench","typ":"JWT"}`))
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": b.issuer, "sub": benchUser, "di": di, "client_id": "ocfcloud-device",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": fmt.Sprintf("j-%d", b.n.Add(1)),
	})
	signing := header + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, b.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

func (b *backendServer) jwks(w http.ResponseWriter, _ *http.Request) {
	enc := base64.RawURLEncoding
	pub, err := b.key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	x, y := pub[1:33], pub[33:65]
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig",
		"x": enc.EncodeToString(x), "y": enc.EncodeToString(y),
	}}})
}

// backend is how the benchmark reaches the backend, in this process or in
// a child process (so that its CPU is not counted as the gateway's).
type backend struct {
	nats, issuer string
	stop         func()
	http         *http.Client
}

func (b *backend) natsURL() string  { return b.nats }
func (b *backend) tokenURL() string { return b.issuer + "/oauth/token" }
func (b *backend) jwksURL() string  { return b.issuer + "/jwks" }
func (b *backend) close()           { b.stop() }

// gatewayArgs are the arguments of the "gateway" role on this backend.
func (b *backend) gatewayArgs() []string {
	return []string{"--nats-url", b.natsURL(), "--token-url", b.tokenURL(), "--jwks-url", b.jwksURL(), "--issuer", b.issuer}
}

// mint gets a device access token for di from the token endpoint.
func (b *backend) mint(di string) (string, error) {
	resp, err := b.http.PostForm(b.tokenURL(), url.Values{"grant_type": {"authorization_code"}, "code": {"c"}, "device_id": {di}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var t struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil || t.AccessToken == "" {
		return "", fmt.Errorf("mint token: %v", err)
	}
	return t.AccessToken, nil
}

// startBackend runs the backend in a child process when spawn can start
// one ("backend" role), else in this process.
func startBackend(ctx context.Context, spawn func(string, []string) (*Process, error)) (*backend, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	if spawn != nil {
		if p, err := spawn("backend", nil); err == nil {
			natsURL, issuer, _ := strings.Cut(p.Addr, " ")
			return &backend{nats: natsURL, issuer: issuer, stop: p.Stop, http: hc}, nil
		}
	}
	s, err := startBackendServer(ctx)
	if err != nil {
		return nil, err
	}
	return &backend{nats: s.nats.URL(), issuer: s.issuer, stop: s.close, http: hc}, nil
}

// Backend is the stand-in backend (embedded NATS with the event stream, a
// token endpoint issuing real ES256 JWTs for any code) for benchmarks of
// other packages that run the gateway role.
type Backend struct{ b *backend }

// StartBackend runs the backend in a child process started by spawn (role
// "backend"), or in this process when spawn is nil or fails.
func StartBackend(ctx context.Context, spawn func(role string, args []string) (*Process, error)) (*Backend, error) {
	b, err := startBackend(ctx, spawn)
	if err != nil {
		return nil, err
	}
	return &Backend{b}, nil
}

// NATSURL is the backend's NATS, where the gateway answers commands.
func (b *Backend) NATSURL() string { return b.b.natsURL() }

// GatewayArgs are the arguments of the "gateway" role on this backend.
func (b *Backend) GatewayArgs() []string { return b.b.gatewayArgs() }

// Close stops the backend.
func (b *Backend) Close() { b.b.close() }
