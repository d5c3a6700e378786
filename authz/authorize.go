package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

const (
	authorizePath = "/oauth/authorize"
	loginPath     = "/oauth/authorize/login"
	consentPath   = "/oauth/authorize/consent"

	sessionCookie = "ocfcloud_session"
	csrfCookie    = "ocfcloud_csrf"

	collAuthCodes = "auth_codes"
	collConsents  = "consents"

	authCodeTTL    = time.Minute
	authRequestTTL = 10 * time.Minute
	maxParamBytes  = 1000
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// scopeDescriptions are shown on the consent page.
var scopeDescriptions = map[string]string{
	scopeOpenID:                     "confirm who you are (your user id and username)",
	auth.ScopeOfflineAccess:         "stay signed in: keep access while you are away",
	auth.ScopeReadDeviceInformation: "see your devices and their details",
	auth.ScopeReadResources:         "read the resources of your devices",
	auth.ScopeWriteResources:        "change the resources of your devices (control them)",
	auth.ScopeWriteSubscriptions:    "subscribe to events of your devices",
}

// authRequest is a validated authorization request. Between the pages it
// travels sealed (authenticated encryption) in a hidden form field, bound to
// the browser's CSRF cookie, so no server state is kept and a replica that
// did not render the page can continue the flow.
type authRequest struct {
	ClientID      string `json:"c"`
	RedirectURI   string `json:"r"`
	RedirectGiven bool   `json:"rg,omitempty"`
	Scope         string `json:"s"`
	State         string `json:"st,omitempty"`
	Nonce         string `json:"n,omitempty"`
	Challenge     string `json:"pc,omitempty"`
	Audience      string `json:"a,omitempty"`
	ForceConsent  bool   `json:"fc,omitempty"`
	UserID        string `json:"u,omitempty"` // set on the consent page
	CSRF          string `json:"x"`
	ExpiresAt     int64  `json:"e"`
}

// authCodeDoc is an issued authorization code, stored by hash.
type authCodeDoc struct {
	Hash          string    `bson:"_id"`
	ClientID      string    `bson:"client_id"`
	UserID        string    `bson:"user_id"`
	RedirectURI   string    `bson:"redirect_uri"`
	RedirectGiven bool      `bson:"redirect_given"`
	Scope         string    `bson:"scope"`
	Nonce         string    `bson:"nonce,omitempty"`
	Challenge     string    `bson:"challenge,omitempty"`
	Audience      string    `bson:"audience,omitempty"`
	AuthTime      time.Time `bson:"auth_time"`
	CreatedAt     time.Time `bson:"created_at"`
	ExpiresAt     time.Time `bson:"expires_at"`
	// Set on the used record, so a replayed code revokes what it gave.
	ChainID         string    `bson:"chain_id,omitempty"`
	AccessJTI       string    `bson:"access_jti,omitempty"`
	AccessExpiresAt time.Time `bson:"access_expires_at,omitempty"`
}

type consentDoc struct {
	ID        string    `bson:"_id"` // user id "|" client id
	UserID    string    `bson:"user_id"`
	ClientID  string    `bson:"client_id"`
	Scopes    []string  `bson:"scopes"`
	UpdatedAt time.Time `bson:"updated_at"`
}

// authError is an error sent back to the client's redirect URI.
type authError struct{ code, description string }

// handleAuthorize starts the authorization code flow (RFC 6749 §4.1, OIDC
// Core §3.1.2). Problems with the client or redirect URI are shown to the
// user (never redirected: the URI is not trusted); the rest go back to the
// client with state and iss (RFC 9207).
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k, v := range q {
		if len(v) > 1 {
			s.renderError(w, http.StatusBadRequest, "The request repeats the parameter "+k+".")
			return
		}
	}
	c, areq, msg := s.authorizeClient(r.Context(), q)
	if msg != "" {
		s.renderError(w, http.StatusBadRequest, msg)
		return
	}
	if ae := s.validateAuthorize(q, c, areq); ae != nil {
		s.redirectError(w, r, areq, ae)
		return
	}
	prompts := strings.Fields(q.Get("prompt"))
	areq.ForceConsent = slices.Contains(prompts, "consent")
	areq.CSRF = s.csrfToken(w, r)
	areq.ExpiresAt = s.now().Add(authRequestTTL).Unix()

	u, authTime := s.sessionUser(r)
	if slices.Contains(prompts, "login") {
		u = nil
	}
	if u == nil {
		if slices.Contains(prompts, "none") {
			s.redirectError(w, r, areq, &authError{"login_required", "the user is not signed in"})
			return
		}
		s.renderLogin(w, http.StatusOK, c, areq, "", "")
		return
	}
	s.afterLogin(w, r, c, areq, u, authTime, slices.Contains(prompts, "none"))
}

// authorizeClient finds the client and the redirect URI. A message means
// the user must be told, not the client.
func (s *Server) authorizeClient(ctx context.Context, q url.Values) (*client, *authRequest, string) {
	id := q.Get("client_id")
	if id == "" {
		return nil, nil, "The request names no application (client_id is missing)."
	}
	c, err := s.lookupClient(ctx, id)
	if err != nil || !slices.Contains(c.grants, grantAuthorizationCode) || len(c.redirectURIs) == 0 {
		return nil, nil, "The application is unknown or may not use this sign-in flow."
	}
	areq := &authRequest{ClientID: c.id}
	if ru := q.Get("redirect_uri"); ru != "" {
		// Exact string match (RFC 9700 §2.1): no normalization, no prefixes.
		if !slices.Contains(c.redirectURIs, ru) {
			return nil, nil, "The redirect URI is not registered for this application."
		}
		areq.RedirectURI, areq.RedirectGiven = ru, true
	} else {
		if len(c.redirectURIs) != 1 {
			return nil, nil, "The request names no redirect URI and the application has more than one."
		}
		areq.RedirectURI = c.redirectURIs[0]
	}
	return c, areq, ""
}

func (s *Server) validateAuthorize(q url.Values, c *client, areq *authRequest) *authError {
	areq.State = q.Get("state")
	if len(areq.State) > maxParamBytes {
		areq.State = ""
		return &authError{"invalid_request", "state is too long"}
	}
	if rt := q.Get("response_type"); rt != "code" {
		return &authError{"unsupported_response_type", "only response_type=code is supported"}
	}
	scope, _, e := grantScope(q.Get("scope"), c.scopes)
	if e != nil {
		return &authError{"invalid_scope", e.description}
	}
	areq.Scope = scope
	areq.Nonce = q.Get("nonce")
	if len(areq.Nonce) > maxParamBytes {
		return &authError{"invalid_request", "nonce is too long"}
	}
	// PKCE (RFC 7636, RFC 9700 §2.1.1): S256 only; plain would let anyone
	// who sees the authorization request redeem the code.
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		return &authError{"invalid_request", "code_challenge_method without code_challenge"}
	case challenge == "" && c.public:
		return &authError{"invalid_request", "public clients must use PKCE with code_challenge_method=S256"}
	case challenge != "" && method != "S256":
		return &authError{"invalid_request", "code_challenge_method must be S256; plain is not accepted"}
	case challenge != "" && !validPKCEValue(challenge, 43, 43):
		return &authError{"invalid_request", "code_challenge must be 43 characters of base64url"}
	}
	areq.Challenge = challenge
	if aud := q.Get("audience"); aud != "" {
		if !slices.Contains(s.audiences(), aud) {
			return &authError{"invalid_request", "unknown audience"}
		}
		areq.Audience = strings.TrimSuffix(aud, "/")
	}
	return nil
}

// audiences are what the audience parameter may name: the API of this
// cloud, by name or by URL (seed 002 passes the API's URL).
func (s *Server) audiences() []string {
	return []string{audience, s.cfg.Issuer, s.cfg.Issuer + "/"}
}

// validPKCEValue checks the RFC 7636 §4.1 alphabet and length.
func validPKCEValue(v string, minLen, maxLen int) bool {
	if len(v) < minLen || len(v) > maxLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// afterLogin continues with a signed-in user: remembered consent issues the
// code at once, otherwise the consent page is shown.
func (s *Server) afterLogin(w http.ResponseWriter, r *http.Request, c *client, areq *authRequest, u *user, authTime time.Time, promptNone bool) {
	ctx := r.Context()
	if c.firstParty && !areq.ForceConsent {
		s.issueCode(w, r, c, areq, u, authTime)
		return
	}
	if !areq.ForceConsent {
		ok, err := s.consented(ctx, u.ID, c.id, areq.Scope)
		if err != nil {
			s.renderInternal(w, r, "find consent", err)
			return
		}
		if ok {
			s.issueCode(w, r, c, areq, u, authTime)
			return
		}
	}
	if promptNone {
		s.redirectError(w, r, areq, &authError{"consent_required", "the user has not consented to this request"})
		return
	}
	areq.UserID = u.ID
	s.renderConsent(w, c, areq, u)
}

// handleLogin checks the login form of the authorization flow.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	areq, c, ok := s.openForm(w, r)
	if !ok {
		return
	}
	username, password := r.PostForm.Get("username"), r.PostForm.Get("password")
	if username == "" || password == "" {
		s.renderLogin(w, http.StatusBadRequest, c, areq, username, "Enter your username and password.")
		return
	}
	if s.storageDown() {
		s.renderLoginLater(w, c, areq, username)
		return
	}
	u, wait, err := s.login(r.Context(), username, password, c.id, clientIP(r))
	if err != nil && storageUnavailable(err) {
		s.log.ErrorContext(r.Context(), "login failed", "err", err)
		s.renderLoginLater(w, c, areq, username)
		return
	}
	if wait > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int((wait+time.Second-1)/time.Second)))
		s.renderLogin(w, http.StatusTooManyRequests, c, areq, username,
			fmt.Sprintf("Too many failed sign-ins. Try again in %d seconds.", int((wait+time.Second-1)/time.Second)))
		return
	}
	if errors.Is(err, errUnauthenticated) {
		s.renderLogin(w, http.StatusUnauthorized, c, areq, username, "The username or password is wrong.")
		return
	}
	if err != nil {
		s.renderInternal(w, r, "login", err)
		return
	}
	now := s.now()
	s.setSession(w, u.ID, now)
	s.afterLogin(w, r, c, areq, u, now, false)
}

// handleConsent takes the user's decision.
func (s *Server) handleConsent(w http.ResponseWriter, r *http.Request) {
	areq, c, ok := s.openForm(w, r)
	if !ok {
		return
	}
	u, authTime := s.sessionUser(r)
	if u == nil || areq.UserID == "" || u.ID != areq.UserID {
		s.renderError(w, http.StatusBadRequest, "Your sign-in expired or changed. Start again from the application.")
		return
	}
	switch r.PostForm.Get("decision") {
	case "allow":
		if err := s.rememberConsent(r.Context(), u.ID, c.id, areq.Scope); err != nil {
			s.renderInternal(w, r, "store consent", err)
			return
		}
		s.audit(AuditEvent{Type: AuditConsent, Success: true, UserID: u.ID, ClientID: c.id, SourceIP: clientIP(r), Detail: areq.Scope})
		s.issueCode(w, r, c, areq, u, authTime)
	case "deny":
		s.audit(AuditEvent{Type: AuditConsent, UserID: u.ID, ClientID: c.id, SourceIP: clientIP(r), Detail: "denied"})
		s.redirectError(w, r, areq, &authError{"access_denied", "the user denied the request"})
	default:
		s.renderError(w, http.StatusBadRequest, "Choose Allow or Deny.")
	}
}

// AuditConsent records a consent decision.
const AuditConsent = "consent"

// openForm reads a POSTed page form and its sealed request, checking expiry
// and the CSRF binding to this browser.
func (s *Server) openForm(w http.ResponseWriter, r *http.Request) (*authRequest, *client, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequestBytes)
	if err := r.ParseForm(); err != nil {
		s.renderError(w, http.StatusBadRequest, "The form could not be read.")
		return nil, nil, false
	}
	sealed, err := base64.RawURLEncoding.DecodeString(r.PostForm.Get("req"))
	var areq authRequest
	if err == nil {
		var plain string
		if plain, err = s.box.open(sealed, "authreq"); err == nil {
			err = json.Unmarshal([]byte(plain), &areq)
		}
	}
	cookie, cerr := r.Cookie(csrfCookie)
	switch {
	case err != nil:
		s.renderError(w, http.StatusBadRequest, "The form is damaged. Start again from the application.")
		return nil, nil, false
	case cerr != nil || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(areq.CSRF)) != 1:
		s.renderError(w, http.StatusForbidden, "The form was not sent from this browser's sign-in page. Start again from the application.")
		return nil, nil, false
	case s.now().Unix() > areq.ExpiresAt:
		s.renderError(w, http.StatusBadRequest, "The sign-in page expired. Start again from the application.")
		return nil, nil, false
	}
	c, err := s.lookupClient(r.Context(), areq.ClientID)
	if err != nil || !slices.Contains(c.redirectURIs, areq.RedirectURI) {
		s.renderError(w, http.StatusBadRequest, "The application is no longer registered.")
		return nil, nil, false
	}
	return &areq, c, true
}

func (s *Server) sealRequest(areq *authRequest) string {
	b, _ := json.Marshal(areq)
	return base64.RawURLEncoding.EncodeToString(s.box.seal(string(b), "authreq"))
}

// issueCode stores a one-time code and sends the browser back.
func (s *Server) issueCode(w http.ResponseWriter, r *http.Request, c *client, areq *authRequest, u *user, authTime time.Time) {
	now := s.now()
	code := randomToken(32)
	doc := authCodeDoc{
		Hash: hashToken(code), ClientID: c.id, UserID: u.ID, RedirectURI: areq.RedirectURI, RedirectGiven: areq.RedirectGiven,
		Scope: areq.Scope, Nonce: areq.Nonce, Challenge: areq.Challenge, Audience: areq.Audience,
		AuthTime: authTime.UTC(), CreatedAt: now.UTC(), ExpiresAt: now.Add(authCodeTTL).UTC(),
	}
	if _, err := s.authCodes.InsertOne(r.Context(), doc); err != nil {
		s.renderInternal(w, r, "store authorization code", err)
		return
	}
	s.redirectBack(w, r, areq, url.Values{"code": {code}})
}

// redirectBack sends the browser to the client's redirect URI with params,
// state and iss (RFC 9207), keeping the URI's own query.
func (s *Server) redirectBack(w http.ResponseWriter, r *http.Request, areq *authRequest, params url.Values) {
	u, err := url.Parse(areq.RedirectURI)
	if err != nil { // validated at registration; cannot happen
		s.renderError(w, http.StatusBadRequest, "The redirect URI is invalid.")
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	if areq.State != "" {
		q.Set("state", areq.State)
	}
	q.Set("iss", s.cfg.Issuer)
	u.RawQuery = q.Encode()
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), status)
}

func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, areq *authRequest, ae *authError) {
	s.redirectBack(w, r, areq, url.Values{"error": {ae.code}, "error_description": {ae.description}})
}

// consented reports whether the user already allowed every scope of scope
// to the client.
func (s *Server) consented(ctx context.Context, userID, clientID, scope string) (bool, error) {
	var d consentDoc
	err := s.consents.FindOne(ctx, bson.M{"_id": userID + "|" + clientID}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, sc := range strings.Fields(scope) {
		if !slices.Contains(d.Scopes, sc) {
			return false, nil
		}
	}
	return true, nil
}

func (s *Server) rememberConsent(ctx context.Context, userID, clientID, scope string) error {
	id := userID + "|" + clientID
	var d consentDoc
	err := s.consents.FindOne(ctx, bson.M{"_id": id}).Decode(&d)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return err
	}
	scopes := d.Scopes
	for _, sc := range strings.Fields(scope) {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	_, err = s.consents.ReplaceOne(ctx, bson.M{"_id": id},
		consentDoc{ID: id, UserID: userID, ClientID: clientID, Scopes: scopes, UpdatedAt: s.now().UTC()},
		options.Replace().SetUpsert(true))
	return err
}

// appCodeGrant redeems an authorization code of a registered app.
func (s *Server) appCodeGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	code := req.form.Get("code")
	if code == "" {
		return nil, invalidRequest("code is required")
	}
	hash := hashToken(code)
	var doc authCodeDoc
	err := s.authCodes.FindOne(ctx, bson.M{"_id": hash}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, s.codeReplayed(ctx, req, hash)
	}
	if err != nil {
		return nil, s.internalError(ctx, "code grant", err, "client_id", req.clientID)
	}
	now := s.now()
	ru := req.form.Get("redirect_uri")
	verifier := req.form.Get("code_verifier")
	switch {
	case doc.ClientID != req.clientID:
		return nil, invalidGrant("the code was not issued to this client")
	case !now.Before(doc.ExpiresAt):
		return nil, invalidGrant("the code has expired")
	case (doc.RedirectGiven || ru != "") && ru != doc.RedirectURI:
		return nil, invalidGrant("redirect_uri differs from the authorization request")
	case doc.Challenge == "" && verifier != "":
		// RFC 9700 §2.1.1: a verifier for a code issued without a
		// challenge is a downgrade attempt.
		return nil, invalidGrant("code_verifier given but the authorization request had no code_challenge")
	case doc.Challenge != "" && !validPKCEValue(verifier, 43, 128):
		return nil, invalidGrant("code_verifier is missing or malformed")
	case doc.Challenge != "" && !pkceMatches(verifier, doc.Challenge):
		return nil, invalidGrant("code_verifier does not match code_challenge")
	}
	res, err := s.authCodes.DeleteOne(ctx, bson.M{"_id": hash})
	if err != nil {
		return nil, s.internalError(ctx, "code grant", err, "client_id", req.clientID)
	}
	if res.DeletedCount != 1 {
		return nil, invalidGrant("the code is unknown, expired or already used")
	}
	u, err := s.activeUser(ctx, doc.UserID)
	if errors.Is(err, errUnauthenticated) {
		return nil, invalidGrant("the user is disabled or deleted")
	}
	if err != nil {
		return nil, s.internalError(ctx, "code grant", err, "user_id", doc.UserID)
	}
	g := grant{
		userID: u.ID, role: u.Role, clientID: req.clientID, scope: doc.Scope,
		refresh:    slices.Contains(strings.Fields(doc.Scope), auth.ScopeOfflineAccess),
		validAfter: latest(u.TokensValidAfter, req.client.tokensValidAfter), ip: req.ip, audience: doc.Audience,
	}
	if slices.Contains(strings.Fields(doc.Scope), scopeOpenID) {
		g.id = &idTokenRequest{nonce: doc.Nonce, authTime: doc.AuthTime, username: u.Username}
	}
	resp, err := s.issue(ctx, g)
	if err != nil {
		return nil, s.internalError(ctx, "issue tokens", err, "user_id", g.userID, "client_id", g.clientID)
	}
	// Remember the use, so a replay revokes what the code gave (RFC 6749
	// §4.1.2). A new _id: see claimCode in onboarding.go.
	used := doc
	used.Hash, used.ChainID, used.AccessJTI, used.AccessExpiresAt = hash+":used", resp.chainID, resp.jti, resp.accessExp
	used.ExpiresAt = now.Add(s.cfg.RefreshTokenTTL).UTC()
	if _, err := s.authCodes.InsertOne(context.WithoutCancel(ctx), used); err != nil {
		s.log.WarnContext(ctx, "record code use failed", "client_id", req.clientID, "err", err)
	}
	s.audit(AuditEvent{Type: AuditGrant, Success: true, UserID: g.userID, ClientID: g.clientID, SourceIP: g.ip, Detail: "authorization code"})
	body, err := json.Marshal(resp)
	if err != nil {
		return nil, s.internalError(ctx, "encode tokens", err)
	}
	return body, nil
}

// codeReplayed answers a code that is not live; a used one is revoked
// with everything it gave.
func (s *Server) codeReplayed(ctx context.Context, req tokenRequest, hash string) *oauthError {
	var used authCodeDoc
	err := s.authCodes.FindOne(ctx, bson.M{"_id": hash + ":used"}).Decode(&used)
	if err == nil && used.ClientID == req.clientID {
		s.log.WarnContext(ctx, "authorization code replayed, revoking its tokens", "client_id", used.ClientID, "user_id", used.UserID)
		s.audit(AuditEvent{Type: AuditRevocation, Success: true, UserID: used.UserID, ClientID: used.ClientID, SourceIP: req.ip, Detail: "authorization code replayed"})
		if used.ChainID != "" {
			if err := s.revokeRefreshChain(ctx, used.ChainID); err != nil {
				return s.internalError(ctx, "revoke replayed code", err)
			}
		}
		if used.AccessJTI != "" && s.now().Before(used.AccessExpiresAt) {
			if err := s.publishRevocation(ctx, auth.Revocation{TokenID: used.AccessJTI, ClientID: used.ClientID, UserID: used.UserID, ExpiresAt: used.AccessExpiresAt}); err != nil {
				return s.internalError(ctx, "revoke replayed code", err)
			}
		}
	}
	return invalidGrant("the code is unknown, expired or already used")
}

func pkceMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}
