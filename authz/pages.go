package authz

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// sessionTTL is how long a sign-in at the authorization endpoint lasts.
const sessionTTL = 8 * time.Hour

type pageData struct {
	Title        string
	Error        string
	Action       string
	Request      string
	ClientName   string
	Username     string
	Scopes       []scopeView
	Audience     string
	RedirectHost string
}

type scopeView struct{ Name, Description string }

// renderPage writes a server-rendered page: no scripts, no framing, no
// caching.
func (s *Server) renderPage(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, d); err != nil {
		s.log.Error("render page failed", "page", name, "err", err)
		status, buf = http.StatusInternalServerError, *bytes.NewBufferString("internal error")
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) renderError(w http.ResponseWriter, status int, msg string) {
	s.renderPage(w, status, "error.html", pageData{Title: "Sign-in problem", Error: msg})
}

func (s *Server) renderInternal(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.ErrorContext(r.Context(), what+" failed", "err", err)
	if storageUnavailable(err) {
		setStorageRetryAfter(w)
		s.renderError(w, http.StatusServiceUnavailable, storageDownMessage)
		return
	}
	s.renderError(w, http.StatusInternalServerError, "Something went wrong on our side. Try again later.")
}

// storageDownMessage is what a person sees while authz cannot reach its
// database.
const storageDownMessage = "Sign-in is unavailable for a moment. Try again in a few seconds."

// renderLoginLater shows the login form again, with the username kept and
// 503 with Retry-After, while the database is down: submitting it again a
// moment later is all the person has to do.
func (s *Server) renderLoginLater(w http.ResponseWriter, c *client, areq *authRequest, username string) {
	setStorageRetryAfter(w)
	s.renderLogin(w, http.StatusServiceUnavailable, c, areq, username, storageDownMessage)
}

func (s *Server) clientName(c *client) string {
	if n := c.name; n != "" {
		return n
	}
	return c.id
}

func (s *Server) renderLogin(w http.ResponseWriter, status int, c *client, areq *authRequest, username, msg string) {
	areq.UserID = ""
	s.renderPage(w, status, "login.html", pageData{
		Title: "Sign in", Error: msg, Action: s.cfg.Issuer + loginPath, Request: s.sealRequest(areq),
		ClientName: s.clientName(c), Username: username,
	})
}

func (s *Server) renderConsent(w http.ResponseWriter, c *client, areq *authRequest, u *user) {
	var scopes []scopeView
	for _, sc := range strings.Fields(areq.Scope) {
		scopes = append(scopes, scopeView{Name: sc, Description: scopeDescriptions[sc]})
	}
	host := areq.RedirectURI
	if ru, err := url.Parse(areq.RedirectURI); err == nil {
		host = ru.Scheme + "://" + ru.Host
	}
	s.renderPage(w, http.StatusOK, "consent.html", pageData{
		Title: "Allow access", Action: s.cfg.Issuer + consentPath, Request: s.sealRequest(areq),
		ClientName: s.clientName(c), Username: u.Username, Scopes: scopes, Audience: areq.Audience, RedirectHost: host,
	})
}

// The session cookie holds the signed-in user, sealed with the secret box
// (AES-GCM authenticates it), so it works on every replica.
type sessionValue struct {
	UserID   string `json:"u"`
	AuthTime int64  `json:"t"`
	Expires  int64  `json:"e"`
}

func (s *Server) secureCookies() bool { return strings.HasPrefix(s.cfg.Issuer, "https://") }

func (s *Server) setSession(w http.ResponseWriter, userID string, now time.Time) {
	b, _ := json.Marshal(sessionValue{UserID: userID, AuthTime: now.Unix(), Expires: now.Add(sessionTTL).Unix()})
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: encodeSealed(s.box.seal(string(b), "session")), Path: "/oauth/",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, Secure: s.secureCookies(), SameSite: http.SameSiteLaxMode,
	})
}

// sessionUser returns the signed-in, active user of r, if any.
func (s *Server) sessionUser(r *http.Request) (*user, time.Time) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, time.Time{}
	}
	sealed, err := decodeSealed(ck.Value)
	if err != nil {
		return nil, time.Time{}
	}
	plain, err := s.box.open(sealed, "session")
	if err != nil {
		return nil, time.Time{}
	}
	var v sessionValue
	if json.Unmarshal([]byte(plain), &v) != nil || s.now().Unix() > v.Expires {
		return nil, time.Time{}
	}
	u, err := s.activeUser(r.Context(), v.UserID)
	if err != nil {
		return nil, time.Time{}
	}
	authTime := time.Unix(v.AuthTime, 0)
	// A session from before a revocation of the user (disabled, role
	// changed) does not count.
	if !u.TokensValidAfter.IsZero() && !authTime.After(u.TokensValidAfter) {
		return nil, time.Time{}
	}
	return u, authTime
}

// csrfToken returns the browser's CSRF cookie value, setting one if absent.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) >= 22 && len(ck.Value) <= 64 {
		return ck.Value
	}
	v := randomToken(18)
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: v, Path: "/oauth/", HttpOnly: true, Secure: s.secureCookies(), SameSite: http.SameSiteLaxMode,
	})
	return v
}

func encodeSealed(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func decodeSealed(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
