package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// The built-in public clients. Neither has a secret: the CLI runs on people's
// machines and the device client is used by the coap-gateway, which proves
// nothing beyond what the code or refresh token proves.
const (
	clientCLI    = "ocfcloud-cli"
	clientDevice = "ocfcloud-device"
	// clientPortal is the web portal (package portal): a public client
	// using the authorization code flow with PKCE, redirecting to the
	// issuer's root.
	clientPortal = "ocfcloud-portal"
)

const (
	grantPassword          = "password"
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	grantClientCredentials = "client_credentials"
)

var supportedGrants = []string{grantPassword, grantAuthorizationCode, grantRefreshToken, grantClientCredentials}

// apiScopes are the C2C API scopes in their canonical order; together they
// are the default and the maximum a user token gets.
var apiScopes = []string{
	auth.ScopeReadDeviceInformation,
	auth.ScopeReadResources,
	auth.ScopeWriteResources,
	auth.ScopeWriteSubscriptions,
}

const scopeOpenID = "openid"

const maxTokenRequestBytes = 64 << 10

type tokenRequest struct {
	client   *client
	clientID string
	form     url.Values
	ip       string
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	req, e := s.parseClientRequest(w, r)
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	gt := req.form.Get("grant_type")
	var body []byte
	switch {
	case gt == "":
		e = invalidRequest("grant_type is required")
	case !slices.Contains(supportedGrants, gt):
		e = unsupportedGrantType("grant_type must be one of " + strings.Join(supportedGrants, ", "))
	case !slices.Contains(req.client.grants, gt):
		e = unauthorizedClient(fmt.Sprintf("client %s may not use grant_type %s", req.clientID, gt))
	case gt != grantClientCredentials && s.storageDown():
		// Every grant but client_credentials reads or writes the database:
		// while it is known to be down, say so at once instead of after the
		// driver's server-selection timeout (5 s, longer than a device waits
		// before it resends).
		e = storageOutage()
	case gt == grantPassword:
		body, e = s.passwordGrant(r.Context(), req)
	case gt == grantAuthorizationCode && req.clientID == clientDevice:
		body, e = s.codeGrant(r.Context(), req)
	case gt == grantAuthorizationCode:
		body, e = s.appCodeGrant(r.Context(), req)
	case gt == grantRefreshToken:
		body, e = s.refreshGrant(r.Context(), req)
	case gt == grantClientCredentials:
		body, e = s.clientCredentialsGrant(r.Context(), req)
	}
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	writeTokenJSON(w, http.StatusOK, body)
}

// parseClientRequest is the common start of the token, revocation and
// introspection endpoints: rate limit by source IP, read the form body,
// authenticate the client, rate limit by client.
func (s *Server) parseClientRequest(w http.ResponseWriter, r *http.Request) (tokenRequest, *oauthError) {
	now := s.now()
	ip := clientIP(r)
	form, e := parseForm(w, r)
	if e != nil {
		return tokenRequest{}, e
	}
	// The coap-gateway exchanges every device's codes and refresh tokens
	// from one address; its grants check 256-bit tokens, not passwords, so
	// they are not held to the per-IP limit that keeps guessing slow.
	if claimedClientID(r, form) != clientDevice {
		if e := s.limiter.allow(ip, now); e != nil {
			return tokenRequest{}, e
		}
	}
	c, e := s.authenticateClient(r, form)
	if e != nil {
		return tokenRequest{}, e
	}
	// The built-in clients are shared by every user and device; a limit
	// per client would throttle them all together.
	if c.appType != "" {
		if e := s.clientLimiter.allow(c.id, now); e != nil {
			return tokenRequest{}, e
		}
	}
	return tokenRequest{client: c, clientID: c.id, form: form, ip: ip}, nil
}

// parseForm reads the form body; only the body counts, because credentials
// in a query string end up in logs.
func parseForm(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequestBytes)
	if err := r.ParseForm(); err != nil {
		return nil, invalidRequest("the body is not a valid form")
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			return nil, invalidRequest("parameter " + k + " is repeated")
		}
	}
	return form, nil
}

// claimedClientID is the client id the request names, unauthenticated.
func claimedClientID(r *http.Request, form url.Values) string {
	if user, _, ok := r.BasicAuth(); ok {
		id, _ := url.QueryUnescape(user)
		return id
	}
	return form.Get("client_id")
}

// authenticateClient identifies and authenticates the client by
// client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded; a public
// client sends its id with an empty password, seed 004), by
// client_secret_post, or by client_id alone for public clients ("none").
// Secrets are compared as SHA-256 hashes in constant time, against the
// in-memory client cache.
func (s *Server) authenticateClient(r *http.Request, form url.Values) (*client, *oauthError) {
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if user, pass, ok := r.BasicAuth(); ok {
		if form.Has("client_secret") {
			return nil, invalidRequest("use one client authentication method, not Basic and client_secret together")
		}
		basicID, err1 := url.QueryUnescape(user)
		basicSecret, err2 := url.QueryUnescape(pass)
		switch {
		case err1 != nil || err2 != nil:
			return nil, invalidClient("malformed client credentials in the Authorization header")
		case id != "" && id != basicID:
			return nil, invalidRequest("client_id in the body and the Authorization header differ")
		}
		id, secret = basicID, basicSecret
	}
	if id == "" {
		return nil, invalidClient("client_id is required")
	}
	ctx := r.Context()
	c, err := s.lookupClient(ctx, id)
	if errors.Is(err, errUnknownClient) {
		s.audit(AuditEvent{Type: AuditClientAuthFailed, SourceIP: clientIP(r), Detail: "unknown client"})
		return nil, invalidClient("unknown client")
	}
	if err != nil {
		return nil, s.internalError(ctx, "client authentication", err)
	}
	if c.public {
		if secret != "" {
			return nil, invalidClient("public clients have no secret")
		}
		return c, nil
	}
	if secret == "" {
		return nil, invalidClient("client authentication is required")
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], c.secretHash[:]) != 1 {
		s.audit(AuditEvent{Type: AuditClientAuthFailed, ClientID: c.id, UserID: c.ownerID, SourceIP: clientIP(r), Detail: "wrong secret"})
		return nil, invalidClient("client authentication failed")
	}
	return c, nil
}

func (s *Server) passwordGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	username, password := req.form.Get("username"), req.form.Get("password")
	if username == "" || password == "" {
		return nil, invalidRequest("username and password are required")
	}
	scope, refresh, e := grantScope(req.form.Get("scope"), req.client.scopes)
	if e != nil {
		return nil, e
	}
	u, wait, err := s.login(ctx, username, password, req.clientID, req.ip)
	if wait > 0 {
		return nil, slowDown(wait)
	}
	if errors.Is(err, errUnauthenticated) {
		return nil, invalidGrant("invalid username or password")
	}
	if err != nil {
		return nil, s.internalError(ctx, "password grant", err, "client_id", req.clientID)
	}
	return s.issueJSON(ctx, grant{
		userID: u.ID, role: u.Role, clientID: req.clientID, scope: scope, refresh: refresh,
		validAfter: latest(u.TokensValidAfter, req.client.tokensValidAfter), ip: req.ip,
	})
}

// clientCredentialsGrant: a native app acts as the user who registered it
// (seed 000), without a refresh token. Everything it needs is in memory.
func (s *Server) clientCredentialsGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	scope, refresh, e := grantScope(req.form.Get("scope"), req.client.scopes)
	if e != nil {
		return nil, e
	}
	if refresh {
		return nil, invalidScope("the client credentials grant gives no refresh token; do not ask for offline_access")
	}
	u, err := s.activeUserCached(ctx, req.client.ownerID)
	if errors.Is(err, errUnauthenticated) {
		return nil, invalidGrant("the user who registered this app is disabled or deleted")
	}
	if err != nil {
		return nil, s.internalError(ctx, "client credentials grant", err, "client_id", req.clientID)
	}
	return s.issueJSON(ctx, grant{
		userID: u.ID, role: u.Role, clientID: req.clientID, scope: scope,
		validAfter: latest(u.TokensValidAfter, req.client.tokensValidAfter), ip: req.ip,
	})
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *Server) refreshGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	raw := req.form.Get("refresh_token")
	if raw == "" {
		return nil, invalidRequest("refresh_token is required")
	}
	var deviceID string
	if req.clientID == clientDevice {
		deviceID = req.form.Get("device_id")
		if !ids.IsUUID(deviceID) {
			return nil, invalidRequest("device_id must be a UUID")
		}
	}
	doc, err := s.findRefreshToken(ctx, raw)
	if errors.Is(err, errTokenGone) {
		return nil, s.refreshTokenGone(ctx, req, hashToken(raw))
	}
	if err != nil {
		return nil, s.internalError(ctx, "refresh grant", err, "client_id", req.clientID)
	}
	if doc.ClientID != req.clientID || !sameDevice(doc.DeviceID, deviceID) {
		s.log.InfoContext(ctx, "refresh token presented by the wrong client or device",
			"client_id", req.clientID, "user_id", doc.UserID, "device_id", deviceID)
		return nil, invalidGrant("the refresh token was not issued to this client or device")
	}
	scope, e := narrowScope(doc.Scope, req.form.Get("scope"))
	if e != nil {
		return nil, e
	}
	u, err := s.activeUser(ctx, doc.UserID)
	if errors.Is(err, errUnauthenticated) {
		return nil, invalidGrant("the user of this refresh token is disabled or deleted")
	}
	if err != nil {
		return nil, s.internalError(ctx, "refresh grant", err, "user_id", doc.UserID)
	}
	g := grant{userID: u.ID, clientID: doc.ClientID, deviceID: doc.DeviceID, scope: scope, refresh: true,
		validAfter: latest(u.TokensValidAfter, req.client.tokensValidAfter), ip: req.ip, rotates: doc, audience: doc.Audience}
	if doc.DeviceID == "" {
		g.role = u.Role
	}
	return s.issueJSON(ctx, g)
}

// sameDevice compares device ids in constant time, ignoring the case of the
// UUID's hex digits.
func sameDevice(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(a)), []byte(strings.ToLower(b))) == 1
}

// issueJSON issues the tokens of g and encodes the answer.
func (s *Server) issueJSON(ctx context.Context, g grant) ([]byte, *oauthError) {
	resp, err := s.issue(ctx, g)
	if errors.Is(err, errTokenGone) { // lost the race to rotate
		return nil, invalidGrant(err.Error())
	}
	if err != nil {
		return nil, s.internalError(ctx, "issue tokens", err, "user_id", g.userID, "client_id", g.clientID)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return nil, s.internalError(ctx, "encode tokens", err)
	}
	s.log.DebugContext(ctx, "tokens issued",
		"user_id", g.userID, "client_id", g.clientID, "device_id", g.deviceID, "refresh", g.refresh)
	s.audit(AuditEvent{Type: AuditGrant, Success: true, UserID: g.userID, ClientID: g.clientID, SourceIP: g.ip})
	return body, nil
}

// internalError logs err (which never contains a token) and hides it from
// the client.
func (s *Server) internalError(ctx context.Context, what string, err error, attrs ...any) *oauthError {
	s.log.Log(ctx, slog.LevelError, what+" failed", append(attrs, "err", err)...)
	if storageUnavailable(err) {
		return storageOutage()
	}
	return serverError()
}

// storageRetryAfter is the Retry-After of every answer authz gives because
// it cannot reach its database.
const storageRetryAfter = 5 * time.Second

// setStorageRetryAfter adds storageRetryAfter to an answer in a REST or page
// form (storageOutage carries it in the OAuth form).
func setStorageRetryAfter(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(storageRetryAfter/time.Second)))
}

// storageOutage tells the client, in the protocol's own terms, that it may
// retry the same request shortly.
func storageOutage() *oauthError {
	return &oauthError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable",
		description: "the authorization server cannot reach its storage; retry shortly", retryAfter: storageRetryAfter}
}

// storageUnavailable reports whether err means the database could not be
// reached (as opposed to a bug or bad data).
func storageUnavailable(err error) bool {
	return mongo.IsTimeout(err) || mongo.IsNetworkError(err) || errors.Is(err, context.DeadlineExceeded)
}

// grantScope validates a requested scope against the client's allowed
// scopes. Without API scopes the token gets every allowed one, so
// "offline_access" alone means "the default plus a refresh token".
func grantScope(requested string, allowed []string) (scope string, refresh bool, e *oauthError) {
	fields, err := ParseScope(requested)
	if err != nil {
		return "", false, invalidScope(err.Error())
	}
	var openid bool
	var api []string
	for _, f := range fields {
		switch {
		case !slices.Contains(grantableScopes, f):
			return "", false, invalidScope(fmt.Sprintf("unknown scope %.80q", f))
		case !slices.Contains(allowed, f):
			return "", false, invalidScope(fmt.Sprintf("scope %.80q is not allowed for this client", f))
		case f == auth.ScopeOfflineAccess:
			refresh = true
		case f == scopeOpenID:
			openid = true
		default:
			api = append(api, f)
		}
	}
	if len(api) == 0 {
		api = allowed
	}
	var out []string
	if openid {
		out = append(out, scopeOpenID)
	}
	for _, a := range apiScopes { // canonical order, no duplicates
		if slices.Contains(api, a) {
			out = append(out, a)
		}
	}
	if refresh {
		out = append(out, auth.ScopeOfflineAccess)
	}
	return strings.Join(out, " "), refresh, nil
}

// narrowScope returns the scope of a refreshed token: the original one, or
// the requested subset of it (RFC 6749 §6).
func narrowScope(original, requested string) (string, *oauthError) {
	if strings.TrimSpace(requested) == "" {
		return original, nil
	}
	have := strings.Fields(original)
	want := strings.Fields(requested)
	for _, w := range want {
		if !slices.Contains(have, w) {
			return "", invalidScope(fmt.Sprintf("scope %.80q was not granted originally", w))
		}
	}
	var out []string
	for _, h := range have {
		if slices.Contains(want, h) {
			out = append(out, h)
		}
	}
	return strings.Join(out, " "), nil
}

// login checks a username and password for clientID, throttled per username
// and source IP, and writes the audit log. A positive wait means the attempt
// was refused unchecked; try again after it.
func (s *Server) login(ctx context.Context, username, password, clientID, ip string) (*user, time.Duration, error) {
	now := s.now()
	if wait := s.loginThrottle.wait(username, ip, now); wait > 0 {
		s.audit(AuditEvent{Type: AuditLoginFailed, ClientID: clientID, SourceIP: ip, Detail: "throttled after repeated failures"})
		return nil, wait, errUnauthenticated
	}
	u, err := s.authenticate(ctx, username, password)
	if errors.Is(err, errUnauthenticated) {
		s.loginThrottle.failed(username, ip, now)
		s.log.InfoContext(ctx, "login refused", "client_id", clientID)
		ev := AuditEvent{Type: AuditLoginFailed, ClientID: clientID, SourceIP: ip, Detail: "unknown user or wrong password"}
		if u != nil { // known user: say whom, never what was typed
			ev.UserID = u.ID
		}
		s.audit(ev)
		return nil, 0, errUnauthenticated
	}
	if err != nil {
		return nil, 0, err
	}
	s.audit(AuditEvent{Type: AuditLogin, Success: true, UserID: u.ID, ClientID: clientID, SourceIP: ip})
	return u, 0, nil
}
