package authz

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/ocfcloud/ocfcloud/internal/auth"
)

// The built-in public clients. Neither has a secret: the CLI runs on people's
// machines and the device client is used by the coap-gateway, which proves
// nothing beyond what the code or refresh token proves.
const (
	clientCLI    = "ocfcloud-cli"
	clientDevice = "ocfcloud-device"
)

const (
	grantPassword          = "password"
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
)

var clientGrants = map[string][]string{
	clientCLI:    {grantPassword, grantRefreshToken},
	clientDevice: {grantAuthorizationCode, grantRefreshToken},
}

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
	clientID string
	form     url.Values
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if e := s.limiter.allow(clientIP(r), s.now()); e != nil {
		writeOAuthError(w, e)
		return
	}
	req, e := parseTokenRequest(w, r)
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	gt := req.form.Get("grant_type")
	var body []byte
	switch {
	case gt == "":
		e = invalidRequest("grant_type is required")
	case !slices.Contains([]string{grantPassword, grantAuthorizationCode, grantRefreshToken}, gt):
		e = unsupportedGrantType("grant_type must be password, authorization_code or refresh_token")
	case !slices.Contains(clientGrants[req.clientID], gt):
		e = unauthorizedClient(fmt.Sprintf("client %s may not use grant_type %s", req.clientID, gt))
	case gt == grantPassword:
		body, e = s.passwordGrant(r.Context(), req)
	case gt == grantAuthorizationCode:
		body, e = s.codeGrant(r.Context(), req)
	case gt == grantRefreshToken:
		body, e = s.refreshGrant(r.Context(), req)
	}
	if e != nil {
		writeOAuthError(w, e)
		return
	}
	writeTokenJSON(w, http.StatusOK, body)
}

// parseTokenRequest reads the form body and authenticates the public client,
// whose id comes from the form or from HTTP Basic with an empty secret.
func parseTokenRequest(w http.ResponseWriter, r *http.Request) (tokenRequest, *oauthError) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return tokenRequest{}, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequestBytes)
	if err := r.ParseForm(); err != nil {
		return tokenRequest{}, invalidRequest("the body is not a valid form")
	}
	// Only the body counts: credentials in a query string end up in logs.
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			return tokenRequest{}, invalidRequest("parameter " + k + " is repeated")
		}
	}
	if form.Get("client_secret") != "" {
		return tokenRequest{}, invalidClient("public clients have no secret")
	}
	id := form.Get("client_id")
	if user, pass, ok := r.BasicAuth(); ok {
		basicID, err := url.QueryUnescape(user)
		switch {
		case err != nil:
			return tokenRequest{}, invalidClient("malformed client id in the Authorization header")
		case pass != "":
			return tokenRequest{}, invalidClient("public clients have no secret")
		case id != "" && id != basicID:
			return tokenRequest{}, invalidRequest("client_id in the body and the Authorization header differ")
		}
		id = basicID
	}
	switch {
	case id == "":
		return tokenRequest{}, invalidClient("client_id is required")
	case clientGrants[id] == nil:
		return tokenRequest{}, invalidClient("unknown client")
	}
	return tokenRequest{clientID: id, form: form}, nil
}

func (s *Server) passwordGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	username, password := req.form.Get("username"), req.form.Get("password")
	if username == "" || password == "" {
		return nil, invalidRequest("username and password are required")
	}
	scope, refresh, e := userScope(req.form.Get("scope"))
	if e != nil {
		return nil, e
	}
	u, err := s.authenticate(ctx, username, password)
	if errors.Is(err, errUnauthenticated) {
		s.log.InfoContext(ctx, "password grant refused", "client_id", req.clientID)
		return nil, invalidGrant("invalid username or password")
	}
	if err != nil {
		return nil, s.internalError(ctx, "password grant", err, "client_id", req.clientID)
	}
	return s.issueJSON(ctx, grant{
		userID: u.ID, role: u.Role, clientID: req.clientID, scope: scope, refresh: refresh,
	})
}

func (s *Server) refreshGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	raw := req.form.Get("refresh_token")
	if raw == "" {
		return nil, invalidRequest("refresh_token is required")
	}
	var deviceID string
	if req.clientID == clientDevice {
		deviceID = req.form.Get("device_id")
		if !isUUID(deviceID) {
			return nil, invalidRequest("device_id must be a UUID")
		}
	}
	doc, err := s.findRefreshToken(ctx, raw)
	if errors.Is(err, errTokenGone) {
		return nil, invalidGrant(err.Error())
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
	if err := s.consumeRefreshToken(ctx, doc.Hash); errors.Is(err, errTokenGone) {
		return nil, invalidGrant(err.Error())
	} else if err != nil {
		return nil, s.internalError(ctx, "refresh grant", err, "user_id", doc.UserID)
	}
	g := grant{userID: u.ID, clientID: doc.ClientID, deviceID: doc.DeviceID, scope: scope, refresh: true}
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
	if err != nil {
		return nil, s.internalError(ctx, "issue tokens", err, "user_id", g.userID, "client_id", g.clientID)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return nil, s.internalError(ctx, "encode tokens", err)
	}
	s.log.InfoContext(ctx, "tokens issued",
		"user_id", g.userID, "client_id", g.clientID, "device_id", g.deviceID, "refresh", g.refresh)
	return body, nil
}

// internalError logs err (which never contains a token) and hides it from
// the client.
func (s *Server) internalError(ctx context.Context, what string, err error, attrs ...any) *oauthError {
	s.log.Log(ctx, slog.LevelError, what+" failed", append(attrs, "err", err)...)
	return serverError()
}

// userScope validates the scope of a password grant. Without API scopes the
// user gets all of them, so "offline_access" alone means "the default plus a
// refresh token".
func userScope(requested string) (scope string, refresh bool, e *oauthError) {
	fields := strings.Fields(requested)
	var openid bool
	var api []string
	for _, f := range fields {
		switch {
		case f == auth.ScopeOfflineAccess:
			refresh = true
		case f == scopeOpenID:
			openid = true
		case slices.Contains(apiScopes, f):
			api = append(api, f)
		default:
			return "", false, invalidScope(fmt.Sprintf("unknown scope %.80q", f))
		}
	}
	if len(api) == 0 {
		api = apiScopes
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
