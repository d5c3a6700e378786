package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

// Collection names.
const (
	collUsers          = "users"
	collSigningKeys    = "signing_keys"
	collRefreshTokens  = "refresh_tokens"
	collOnboardingCode = "onboarding_codes"
)

const (
	discoveryPath = "/.well-known/openid-configuration"
	jwksPath      = "/.well-known/jwks.json"
	tokenPath     = "/oauth/token"
	userinfoPath  = "/userinfo"
	onboardPath   = "/api/v1/onboarding-codes"
)

// sweepInterval bounds how often expired codes and refresh tokens are
// deleted; FerretDB has no TTL indexes, so expiry is done in code.
const sweepInterval = time.Minute

// Server is the authorization server. Create it with New and add its routes
// to a mux with Register.
type Server struct {
	cfg Config
	log *slog.Logger

	users         *mongo.Collection
	codes         *mongo.Collection
	refreshTokens *mongo.Collection

	keys     *keyring
	verifier *auth.Verifier
	answers  *answerCache
	limiter  *ipLimiter

	// dummyHash is verified for unknown usernames so they cost as much time
	// as a wrong password.
	dummyHash              string
	generatedAdminPassword string

	sweepMu   sync.Mutex
	lastSweep time.Time
}

// New prepares the authorization server on db: it creates the indexes, loads
// the signing keys (creating the first one on an empty database) and creates
// the user "admin" if it is missing.
func New(ctx context.Context, cfg Config, db *mongo.Database) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:           cfg,
		log:           cfg.Logger.With("service", "authz"),
		users:         db.Collection(collUsers),
		codes:         db.Collection(collOnboardingCode),
		refreshTokens: db.Collection(collRefreshTokens),
		answers:       newAnswerCache(),
		limiter:       newIPLimiter(tokenRate, tokenBurst),
		// The verifier fetches keys long after New returns, so it must not
		// die with a start-up context.
		verifier: auth.NewVerifier(context.WithoutCancel(ctx), cfg.Issuer, cfg.JWKSURL, cfg.Now),
	}
	if err := s.createIndexes(ctx); err != nil {
		return nil, err
	}
	if s.keys, err = loadKeyring(ctx, db.Collection(collSigningKeys), s.now()); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if s.dummyHash, err = hashPassword(randomToken(16)); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if s.generatedAdminPassword, err = s.ensureAdmin(ctx, cfg.AdminPassword); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	return s, nil
}

func (s *Server) createIndexes(ctx context.Context) error {
	if _, err := s.users.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "username", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("username_unique"),
	}); err != nil {
		return fmt.Errorf("authz: index users.username: %w", err)
	}
	// For the expiry sweeps; FerretDB scans anyway, a real MongoDB does not.
	for _, c := range []*mongo.Collection{s.codes, s.refreshTokens} {
		if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{
			Keys:    bson.D{{Key: "expires_at", Value: 1}},
			Options: options.Index().SetName("expires_at"),
		}); err != nil {
			return fmt.Errorf("authz: index %s.expires_at: %w", c.Name(), err)
		}
	}
	return nil
}

// Register adds the routes of the server to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+discoveryPath, s.handleDiscovery)
	mux.HandleFunc("GET "+jwksPath, s.handleJWKS)
	mux.HandleFunc("POST "+tokenPath, s.handleToken)
	mux.Handle("POST "+onboardPath, s.verifier.Require(http.HandlerFunc(s.handleCreateOnboardingCode)))
	mux.Handle("GET "+userinfoPath, s.verifier.Require(http.HandlerFunc(s.handleUserinfo)))
}

// GeneratedAdminPassword returns the password of the user "admin" if this
// start created it with a random password, else "". Show it to the operator
// once; it is not stored anywhere in plaintext.
func (s *Server) GeneratedAdminPassword() string { return s.generatedAdminPassword }

func (s *Server) now() time.Time { return s.cfg.Now() }

// sweep deletes expired onboarding codes and refresh tokens, at most once per
// sweepInterval. Device refresh tokens (expires_at zero) are never swept.
func (s *Server) sweep(ctx context.Context, now time.Time) {
	s.sweepMu.Lock()
	if now.Sub(s.lastSweep) < sweepInterval && !now.Before(s.lastSweep) {
		s.sweepMu.Unlock()
		return
	}
	s.lastSweep = now
	s.sweepMu.Unlock()
	expired := bson.M{"expires_at": bson.M{"$lte": now.UTC(), "$gt": time.Unix(0, 0).UTC()}}
	for _, c := range []*mongo.Collection{s.codes, s.refreshTokens} {
		if res, err := c.DeleteMany(ctx, expired); err != nil {
			s.log.WarnContext(ctx, "expiry sweep failed", "collection", c.Name(), "err", err)
		} else if res.DeletedCount > 0 {
			s.log.DebugContext(ctx, "expiry sweep", "collection", c.Name(), "deleted", res.DeletedCount)
		}
	}
}
