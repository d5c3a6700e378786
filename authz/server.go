package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/time/rate"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

// Collection names.
const (
	collUsers          = "users"
	collSigningKeys    = "signing_keys"
	collRefreshTokens  = "refresh_tokens"
	collOnboardingCode = "onboarding_codes"
	collSecretKeys     = "secret_keys"
)

const (
	discoveryPath   = "/.well-known/openid-configuration"
	jwksPath        = "/.well-known/jwks.json"
	tokenPath       = "/oauth/token"
	userinfoPath    = "/userinfo"
	onboardPath     = "/api/v1/onboarding-codes"
	appsPath        = "/api/v1/apps"
	usersPath       = "/api/v1/users"
	auditPath       = "/api/v1/audit"
	signingKeysPath = "/api/v1/signing-keys"
)

// sweepInterval bounds how often expired codes and refresh tokens are
// deleted; FerretDB has no TTL indexes, so expiry is done in code.
const sweepInterval = time.Minute

// Server is the authorization server. Create it with New and add its routes
// to a mux with Register.
type Server struct {
	cfg Config
	log *slog.Logger

	users       *mongo.Collection
	codes       *mongo.Collection
	refresh     refreshStore
	apps        *mongo.Collection
	revocations *mongo.Collection
	auditColl   *mongo.Collection
	appTokens   *mongo.Collection
	authCodes   *mongo.Collection
	consents    *mongo.Collection

	keys          atomic.Pointer[keyring]
	signingKeys   *mongo.Collection
	box           *secretBox
	verifier      *auth.Verifier
	ownVerifier   bool
	answers       *answerCache
	limiter       *ipLimiter
	clientLimiter *ipLimiter
	clients       *clientCache
	portal        *client
	loginThrottle *loginThrottle
	userCache     *userCache
	auditLog      *auditLog
	subs          []*nats.Subscription

	// dummyHash is verified for unknown usernames so they cost as much time
	// as a wrong password.
	dummyHash              string
	generatedAdminPassword string

	sweepMu   sync.Mutex
	lastSweep time.Time
	sweepStop chan struct{}
	sweepDone chan struct{}
	closeOnce sync.Once
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
		apps:          db.Collection(collApps),
		revocations:   db.Collection(auth.RevocationsCollection),
		auditColl:     db.Collection(collAudit),
		appTokens:     db.Collection(auth.AppTokensCollection),
		authCodes:     db.Collection(collAuthCodes),
		consents:      db.Collection(collConsents),
		signingKeys:   db.Collection(collSigningKeys),
		answers:       newAnswerCache(),
		limiter:       newIPLimiter(rate.Limit(cfg.TokenRateIP), cfg.TokenBurstIP),
		clientLimiter: newIPLimiter(rate.Limit(cfg.TokenRateClient), cfg.TokenBurstClient),
		clients:       newClientCache(),
		portal:        newPortalClient(cfg.PortalRedirectURIs),
		loginThrottle: newLoginThrottle(),
		userCache:     newUserCache(),
		verifier:      cfg.Verifier,
	}
	if s.verifier == nil {
		// The verifier fetches keys long after New returns, so it must not
		// die with a start-up context.
		s.verifier = auth.NewVerifier(context.WithoutCancel(ctx), cfg.Issuer, cfg.JWKSURL, cfg.Now,
			auth.WithRevocations(cfg.NATS, db), auth.OnExpiredToken(s.recordExpiredUse))
		s.ownVerifier = true
	}
	s.auditLog = newAuditLog(s.auditColl, s.log)
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.createIndexes(ctx); err != nil {
		return nil, err
	}
	if s.refresh, err = newMongoRefreshStore(ctx, db); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if s.box, err = loadSecretBox(ctx, db.Collection(collSecretKeys), s.now()); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if err := s.followChanges(); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if err := s.followExpiredUses(); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if err := s.followUnregisteredDevices(); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if err := s.reloadKeys(ctx); err != nil {
		return nil, err
	}
	if s.dummyHash, err = hashPassword(randomToken(16)); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if s.generatedAdminPassword, err = s.ensureAdmin(ctx, cfg.AdminPassword); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	s.sweepStop = make(chan struct{})
	s.sweepDone = make(chan struct{})
	go s.sweepLoop()
	ok = true
	return s, nil
}

// sweepLoop runs the expiry sweep in the background; FerretDB has no TTL
// indexes.
func (s *Server) sweepLoop() {
	defer close(s.sweepDone)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			s.sweep(ctx, s.now())
			cancel()
		}
	}
}

// Close stops the background work and writes the buffered audit events. The
// routes must not be served any more.
func (s *Server) Close() { s.closeOnce.Do(s.close) }

func (s *Server) close() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	if s.ownVerifier {
		s.verifier.Close()
	}
	if s.sweepStop != nil {
		close(s.sweepStop)
		<-s.sweepDone
	}
	s.auditLog.close()
}

func (s *Server) createIndexes(ctx context.Context) error {
	if _, err := s.users.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "username", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("username_unique"),
	}); err != nil {
		return fmt.Errorf("authz: index users.username: %w", err)
	}
	if _, err := s.apps.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "owner_id", Value: 1}, {Key: "name", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("owner_name_unique"),
	}); err != nil {
		return fmt.Errorf("authz: index apps.owner_id+name: %w", err)
	}
	if _, err := s.appTokens.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "hash", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("hash_unique"),
	}); err != nil {
		return fmt.Errorf("authz: index app_tokens.hash: %w", err)
	}
	// For the expiry sweeps; FerretDB scans anyway, a real MongoDB does not.
	for _, c := range []*mongo.Collection{s.codes, s.revocations, s.authCodes} {
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
	mux.HandleFunc("POST "+revokePath, s.handleRevoke)
	mux.HandleFunc("GET "+openAPIPath, handleOpenAPI)
	mux.HandleFunc("GET "+authorizePath, s.handleAuthorize)
	mux.HandleFunc("POST "+loginPath, s.handleLogin)
	mux.HandleFunc("POST "+consentPath, s.handleConsent)
	mux.HandleFunc("POST "+introspectPath, s.handleIntrospect)
	// The Bearer routes all read or write the database. The token is
	// checked first, so an anonymous caller learns nothing of an outage.
	bearer := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, s.verifier.Require(s.needsStorage(h)))
	}
	bearer("POST "+onboardPath, s.handleCreateOnboardingCode)
	bearer("GET "+userinfoPath, s.handleUserinfo)
	bearer("POST "+appsPath, s.handleCreateApp)
	bearer("GET "+appsPath, s.handleListApps)
	bearer("GET "+appsPath+"/{id}", s.handleGetApp)
	bearer("PATCH "+appsPath+"/{id}", s.handleUpdateApp)
	bearer("DELETE "+appsPath+"/{id}", s.handleDeleteApp)
	bearer("POST "+appsPath+"/{id}/secret/reveal", s.handleRevealSecret)
	bearer("POST "+appsPath+"/{id}/secret/rotate", s.handleRotateSecret)
	bearer("POST "+appsPath+"/{id}/client-id/rotate", s.handleRotateClientID)
	bearer("POST "+usersPath, s.handleCreateUser)
	bearer("GET "+usersPath, s.handleListUsers)
	bearer("GET "+usersPath+"/{id}", s.handleGetUser)
	bearer("PATCH "+usersPath+"/{id}", s.handleUpdateUser)
	bearer("POST "+appsPath+"/{id}/tokens", s.handleCreateAppToken)
	bearer("GET "+appsPath+"/{id}/tokens", s.handleListAppTokens)
	bearer("DELETE "+appsPath+"/{id}/tokens/{tokenId}", s.handleRevokeAppToken)
	bearer("GET "+auditPath, s.handleAudit)
	bearer("POST "+signingKeysPath+"/rotate", s.handleRotateSigningKey)
}

// needsStorage answers with outage (503 and Retry-After) at once while the
// database watcher (Config.DatabaseUp) reports the database down, instead of
// letting the request wait out the driver's server selection (5 s) first, as
// the token endpoint does.
func (s *Server) needsStorage(h http.Handler) http.Handler {
	if s.cfg.DatabaseUp == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.storageDown() {
			writeStorageOutage(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// storageDown reports whether the database watcher last saw the database
// down.
func (s *Server) storageDown() bool { return s.cfg.DatabaseUp != nil && !s.cfg.DatabaseUp() }

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
	if err := s.refresh.sweep(ctx, now); err != nil {
		s.log.WarnContext(ctx, "expiry sweep failed", "err", err)
	}
	for _, c := range []*mongo.Collection{s.codes, s.revocations, s.authCodes} {
		if res, err := c.DeleteMany(ctx, expired); err != nil {
			s.log.WarnContext(ctx, "expiry sweep failed", "collection", c.Name(), "err", err)
		} else if res.DeletedCount > 0 {
			s.log.DebugContext(ctx, "expiry sweep", "collection", c.Name(), "deleted", res.DeletedCount)
		}
	}
	old := bson.M{"expires_at": bson.M{"$lte": now.Add(-appTokenKeepDays * 24 * time.Hour).UTC()}}
	if _, err := s.appTokens.DeleteMany(ctx, old); err != nil {
		s.log.WarnContext(ctx, "expiry sweep failed", "collection", s.appTokens.Name(), "err", err)
	}
}
