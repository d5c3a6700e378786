package authz_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/ocfcloud/ocfcloud/authz"
)

const redirectURI = "http://127.0.0.1:9/callback"

// browser is a user agent with cookies that stops at the client's redirect
// URI, as a browser would hand it over to the app.
type browser struct {
	t    *testing.T
	http *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.http.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (b *browser) get(u string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

var (
	formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	hiddenReq  = regexp.MustCompile(`name="req" value="([^"]+)"`)
)

// submit posts the page's form with fields added.
func (b *browser) submit(p page, fields url.Values) page {
	b.t.Helper()
	action, req := formAction.FindStringSubmatch(p.body), hiddenReq.FindStringSubmatch(p.body)
	if action == nil || req == nil {
		b.t.Fatalf("no form on the page (%d): %s", p.status, p.body)
	}
	fields.Set("req", req[1])
	r, _ := http.NewRequest(http.MethodPost, action[1], strings.NewReader(fields.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(r)
}

func isLoginPage(p page) bool   { return strings.Contains(p.body, `name="password"`) }
func isConsentPage(p page) bool { return strings.Contains(p.body, `name="decision"`) }

// redirected returns where p sends the browser back to the app.
func redirected(t *testing.T, p page) url.Values {
	t.Helper()
	if p.status != http.StatusFound && p.status != http.StatusSeeOther {
		t.Fatalf("no redirect: %d %s", p.status, p.body)
	}
	u, err := url.Parse(p.header.Get("Location"))
	if err != nil || u.Scheme+"://"+u.Host+u.Path != redirectURI {
		t.Fatalf("redirect to %q", p.header.Get("Location"))
	}
	return u.Query()
}

// signIn goes through login and consent as a person would.
func (b *browser) signIn(authURL, username, password, decision string) url.Values {
	b.t.Helper()
	p := b.get(authURL)
	if isLoginPage(p) {
		p = b.submit(p, url.Values{"username": {username}, "password": {password}})
	}
	if isConsentPage(p) {
		p = b.submit(p, url.Values{"decision": {decision}})
	}
	return redirected(b.t, p)
}

func (c *cloud) webApp(bearer, typ string) appView {
	return c.newApp(bearer, map[string]any{"name": "app-" + typ, "type": typ, "redirectUris": []string{redirectURI, "https://app.example/cb"}})
}

func TestWebAppSignsInWithCodeFlowUsingOAuth2AndOIDCClients(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	ivy, ivyTok := c.newUser("ivy")
	app := c.webApp(ivyTok, "web")
	ctx := context.Background()

	provider, err := oidc.NewProvider(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	conf := oauth2.Config{
		ClientID: app.ClientID, ClientSecret: app.ClientSecret, Endpoint: provider.Endpoint(), RedirectURL: redirectURI,
		Scopes: []string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess, "r:deviceinformation:*"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("st-1", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n-1"),
		oauth2.SetAuthURLParam("audience", c.url+"/"))

	b := newBrowser(t)
	got := b.signIn(authURL, "ivy", "ivy-password", "allow")
	if got.Get("state") != "st-1" || got.Get("iss") != c.url || got.Get("code") == "" {
		t.Fatalf("redirect %v", got)
	}
	tok, err := conf.Exchange(ctx, got.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: app.ClientID, Now: c.clock.Now}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != "n-1" || idt.Subject != ivy.ID || idt.AccessTokenHash == "" {
		t.Fatalf("ID token %+v", idt)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("at_hash: %v", err)
	}
	if tok.RefreshToken == "" || c.userinfoStatus(tok.AccessToken) != http.StatusOK {
		t.Fatalf("token %+v", tok)
	}
	if aud := rawClaims(t, tok.AccessToken)["aud"]; !strings.Contains(strings.Join(toStrings(aud), " "), c.url) {
		t.Errorf("aud %v lacks the requested audience", aud)
	}

	// Refresh through x/oauth2's token source.
	tok.Expiry = time.Now().Add(-time.Minute)
	next, err := conf.TokenSource(ctx, tok).Token()
	if err != nil || next.AccessToken == tok.AccessToken || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v %+v", err, next)
	}

	// Signed in and consented: the next request comes straight back.
	p := b.get(conf.AuthCodeURL("st-2", oauth2.S256ChallengeOption(verifier)))
	if again := redirected(t, p); again.Get("code") == "" || again.Get("state") != "st-2" {
		t.Fatalf("second authorization %v", again)
	}
	// More scopes than consented to: the consent page again.
	wider := conf
	wider.Scopes = append(wider.Scopes, "w:resources:*")
	if p := b.get(wider.AuthCodeURL("st-3", oauth2.S256ChallengeOption(verifier))); !isConsentPage(p) {
		t.Fatalf("wider scope skipped consent: %d", p.status)
	}
}

func toStrings(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			s, _ := e.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

func TestSPANeedsS256PKCEAndRedeemsACodeOnce(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, judyTok := c.newUser("judy")
	app := c.webApp(judyTok, "spa")
	conf := oauth2.Config{ClientID: app.ClientID, RedirectURL: redirectURI, Scopes: []string{"offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize", TokenURL: c.url + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
	b := newBrowser(t)

	for name, opts := range map[string][]oauth2.AuthCodeOption{
		"no PKCE":    nil,
		"plain PKCE": {oauth2.SetAuthURLParam("code_challenge", strings.Repeat("a", 43)), oauth2.SetAuthURLParam("code_challenge_method", "plain")},
		"no method":  {oauth2.SetAuthURLParam("code_challenge", strings.Repeat("a", 43))},
	} {
		got := redirected(t, b.get(conf.AuthCodeURL("s", opts...)))
		if got.Get("error") != "invalid_request" || got.Get("state") != "s" || got.Get("iss") != c.url {
			t.Errorf("%s: %v", name, got)
		}
	}

	verifier := oauth2.GenerateVerifier()
	code := b.signIn(conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), "judy", "judy-password", "allow").Get("code")
	ctx := context.Background()
	for name, opts := range map[string][]oauth2.AuthCodeOption{
		"no verifier":    nil,
		"wrong verifier": {oauth2.VerifierOption(oauth2.GenerateVerifier())},
	} {
		if _, err := conf.Exchange(ctx, code, opts...); !isOAuthError(err, "invalid_grant") {
			t.Errorf("%s: %v", name, err)
		}
	}
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tok.Extra("id_token").(string); ok {
		t.Error("an ID token without openid")
	}
	// A replayed code is refused and revokes what it gave (RFC 6749 §4.1.2).
	if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("replay: %v", err)
	}
	if got := c.userinfoStatus(tok.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("access token of a replayed code answers %d", got)
	}
	expectOAuthError(t, c.postToken(refreshForm(app.ClientID, tok.RefreshToken, "")), http.StatusBadRequest, "invalid_grant")
}

func isOAuthError(err error, code string) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == code
}

func TestConfidentialClientWithoutPKCERejectsAVerifier(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.webApp(c.adminToken(), "web")
	conf := oauth2.Config{ClientID: app.ClientID, ClientSecret: app.ClientSecret, RedirectURL: redirectURI,
		Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize", TokenURL: c.url + "/oauth/token"}}
	b := newBrowser(t)
	code := b.signIn(conf.AuthCodeURL("s"), "admin", adminPassword, "allow").Get("code")
	ctx := context.Background()
	if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier())); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("PKCE downgrade: %v", err)
	}
	other := conf
	other.RedirectURL = "https://app.example/cb"
	if _, err := other.Exchange(ctx, code); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("another redirect URI at the token endpoint: %v", err)
	}
	if _, err := conf.Exchange(ctx, code); err != nil {
		t.Fatal(err)
	}
}

func TestRedirectURIMustMatchExactly(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.webApp(c.adminToken(), "web")
	b := newBrowser(t)
	for _, ru := range []string{redirectURI + "/", redirectURI + "?x=1", "http://127.0.0.1:9/callbacK", "https://evil.example/cb", "http://127.0.0.1:9/callback/../cb"} {
		q := url.Values{"response_type": {"code"}, "client_id": {app.ClientID}, "redirect_uri": {ru}, "state": {"s"}}
		p := b.get(c.url + "/oauth/authorize?" + q.Encode())
		if p.status != http.StatusBadRequest || p.header.Get("Location") != "" || !strings.Contains(p.body, "redirect URI") {
			t.Errorf("%s: %d %q", ru, p.status, p.header.Get("Location"))
		}
	}
	q := url.Values{"response_type": {"code"}, "client_id": {"nobody"}, "redirect_uri": {redirectURI}}
	if p := b.get(c.url + "/oauth/authorize?" + q.Encode()); p.status != http.StatusBadRequest || p.header.Get("Location") != "" {
		t.Errorf("unknown client: %d", p.status)
	}
	q = url.Values{"response_type": {"code"}, "client_id": {app.ClientID}, "redirect_uri": {redirectURI}, "audience": {"https://elsewhere.example/"}, "state": {"s"}}
	if got := redirected(t, b.get(c.url+"/oauth/authorize?"+q.Encode())); got.Get("error") != "invalid_request" {
		t.Errorf("unknown audience: %v", got)
	}
	q.Set("audience", c.url+"/")
	q.Set("response_type", "token")
	if got := redirected(t, b.get(c.url+"/oauth/authorize?"+q.Encode())); got.Get("error") != "unsupported_response_type" {
		t.Errorf("implicit flow: %v", got)
	}
}

func TestDenyingConsentSendsAccessDenied(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.webApp(c.adminToken(), "web")
	conf := oauth2.Config{ClientID: app.ClientID, RedirectURL: redirectURI, Scopes: []string{"r:resources:*"},
		Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize"}}
	b := newBrowser(t)
	p := b.submit(b.get(conf.AuthCodeURL("s-deny")), url.Values{"username": {"admin"}, "password": {adminPassword}})
	if !isConsentPage(p) || !strings.Contains(p.body, "r:resources:*") || !strings.Contains(p.body, "read the resources of your devices") {
		t.Fatalf("consent page does not list the scope: %s", p.body)
	}
	got := redirected(t, b.submit(p, url.Values{"decision": {"deny"}}))
	if got.Get("error") != "access_denied" || got.Get("state") != "s-deny" || got.Get("iss") != c.url || got.Get("code") != "" {
		t.Fatalf("deny: %v", got)
	}
	// Nothing was remembered: the consent page comes again.
	if p := b.get(conf.AuthCodeURL("s")); !isConsentPage(p) {
		t.Fatalf("after deny: %d", p.status)
	}
	// prompt=none cannot show it.
	if got := redirected(t, b.get(conf.AuthCodeURL("s", oauth2.SetAuthURLParam("prompt", "none")))); got.Get("error") != "consent_required" {
		t.Fatalf("prompt=none: %v", got)
	}
	if got := redirected(t, newBrowser(t).get(conf.AuthCodeURL("s", oauth2.SetAuthURLParam("prompt", "none")))); got.Get("error") != "login_required" {
		t.Fatalf("prompt=none signed out: %v", got)
	}
}

func TestLoginPageIsAccessibleAndNeedsNoScript(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	app := c.webApp(c.adminToken(), "web")
	conf := oauth2.Config{ClientID: app.ClientID, RedirectURL: redirectURI, Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize"}}
	b := newBrowser(t)
	p := b.get(conf.AuthCodeURL("s"))
	for _, want := range []string{`<html lang="en">`, `<label for="username">`, `id="username"`, `<label for="password">`, `id="password"`,
		`autocomplete="current-password"`, `<button type="submit">`, "app-web"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	if strings.Contains(p.body, "<script") || !strings.Contains(p.header.Get("Content-Security-Policy"), "default-src 'none'") ||
		p.header.Get("X-Frame-Options") != "DENY" || p.header.Get("Cache-Control") != "no-store" {
		t.Errorf("page headers %v", p.header)
	}
	wrong := b.submit(p, url.Values{"username": {"admin"}, "password": {"wrong password"}})
	if wrong.status != http.StatusUnauthorized || !strings.Contains(wrong.body, `role="alert"`) || !strings.Contains(wrong.body, `value="admin"`) {
		t.Errorf("wrong password page %d", wrong.status)
	}
	// A form posted without this browser's CSRF cookie is refused.
	other := newBrowser(t)
	if got := other.submit(p, url.Values{"username": {"admin"}, "password": {adminPassword}}); got.status != http.StatusForbidden {
		t.Errorf("cross-site login post: %d", got.status)
	}
}

func TestLoginIsThrottledPerUserAndIP(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	_, _ = c.newUser("kim")
	app := c.webApp(c.adminToken(), "web")
	conf := oauth2.Config{ClientID: app.ClientID, RedirectURL: redirectURI, Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize"}}
	b := newBrowser(t)
	p := b.get(conf.AuthCodeURL("s"))
	for range 5 {
		p = b.submit(p, url.Values{"username": {"kim"}, "password": {"guess-guess"}})
		if p.status != http.StatusUnauthorized {
			t.Fatalf("failure: %d", p.status)
		}
	}
	p = b.submit(p, url.Values{"username": {"kim"}, "password": {"kim-password"}})
	if p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") == "" {
		t.Fatalf("sixth try with the right password: %d", p.status)
	}
	// The password grant shares the throttle.
	r := c.login("kim", "kim-password", "")
	expectOAuthError(t, r, http.StatusTooManyRequests, "temporarily_unavailable")
	// Other users are not locked out by kim's attacker...
	c.mustLogin("admin", adminPassword, "")
	// ...and kim gets another try a minute later.
	c.clock.Advance(time.Minute)
	c.mustLogin("kim", "kim-password", "")
}

func TestEveryGrantWorksWithTheOAuth2Client(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	ctx := context.Background()
	_, leoTok := c.newUser("leo")
	web := c.webApp(leoTok, "web")
	native := c.newApp(leoTok, map[string]any{"name": "cron", "type": "native"})
	endpoint := oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize", TokenURL: c.url + "/oauth/token", AuthStyle: oauth2.AuthStyleInHeader}

	cc := clientcredentials.Config{ClientID: native.ClientID, ClientSecret: native.ClientSecret, TokenURL: endpoint.TokenURL,
		Scopes: []string{"r:deviceinformation:*"}, AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(ctx)
	if err != nil || tok.RefreshToken != "" || c.userinfoStatus(tok.AccessToken) != http.StatusOK {
		t.Fatalf("client credentials: %v %+v", err, tok)
	}

	conf := oauth2.Config{ClientID: web.ClientID, ClientSecret: web.ClientSecret, Endpoint: endpoint, Scopes: []string{"offline_access"}}
	tok, err = conf.PasswordCredentialsToken(ctx, "leo", "leo-password")
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("password grant: %v %+v", err, tok)
	}
	tok.Expiry = time.Now().Add(-time.Second)
	if _, err := conf.TokenSource(ctx, tok).Token(); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	// The rotated token replayed after the grace window kills the chain.
	c.clock.Advance(time.Minute)
	if _, err := conf.TokenSource(ctx, tok).Token(); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("replay: %v", err)
	}
}

func TestPortalSignsInWithoutConsentAndManagesApps(t *testing.T) {
	c := startCloud(t, nil, nil, nil)
	conf := oauth2.Config{ClientID: "ocfcloud-portal", RedirectURL: c.url + "/", Scopes: []string{"openid", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize", TokenURL: c.url + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
	verifier := oauth2.GenerateVerifier()
	b := newBrowser(t)
	p := b.submit(b.get(conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier))), url.Values{"username": {"admin"}, "password": {adminPassword}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("the portal got a consent page or an error: %d", p.status)
	}
	u, _ := url.Parse(p.header.Get("Location"))
	if u.Scheme+"://"+u.Host+u.Path != c.url+"/" || u.Query().Get("iss") != c.url {
		t.Fatalf("redirect %s", u)
	}
	tok, err := conf.Exchange(context.Background(), u.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	c.newApp(tok.AccessToken, map[string]any{"name": "from the portal", "type": "native"})
	// Only the issuer's root is a portal redirect URI.
	q := url.Values{"response_type": {"code"}, "client_id": {"ocfcloud-portal"}, "redirect_uri": {"http://127.0.0.1:9/"}}
	if p := b.get(c.url + "/oauth/authorize?" + q.Encode()); p.status != http.StatusBadRequest {
		t.Fatalf("portal with a foreign redirect URI: %d", p.status)
	}
}

// While the database watcher reports the database down, the login form
// comes back at once with 503, Retry-After, a message and the username
// kept; submitting it again after the outage signs in.
func TestLoginFormAsksToRetryWhileTheDatabaseIsDown(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	c := startCloud(t, nil, nil, func(cfg *authz.Config) { cfg.DatabaseUp = up.Load })
	_, _ = c.newUser("kim")
	app := c.webApp(c.adminToken(), "web")
	conf := oauth2.Config{ClientID: app.ClientID, RedirectURL: redirectURI, Endpoint: oauth2.Endpoint{AuthURL: c.url + "/oauth/authorize"}}
	b := newBrowser(t)
	p := b.get(conf.AuthCodeURL("s"))
	up.Store(false)
	p = b.submit(p, url.Values{"username": {"kim"}, "password": {"kim-password"}})
	if p.status != http.StatusServiceUnavailable || p.header.Get("Retry-After") == "" || !isLoginPage(p) ||
		!strings.Contains(p.body, "Try again in a few seconds") || !strings.Contains(p.body, `value="kim"`) {
		t.Fatalf("login while the database is down: %d (Retry-After %q)\n%s", p.status, p.header.Get("Retry-After"), p.body)
	}
	up.Store(true)
	p = b.submit(p, url.Values{"username": {"kim"}, "password": {"kim-password"}})
	if isConsentPage(p) {
		p = b.submit(p, url.Values{"decision": {"allow"}})
	}
	if q := redirected(t, p); q.Get("code") == "" {
		t.Fatalf("no code after the outage: %v", q)
	}
}
