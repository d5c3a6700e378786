package tokenbench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ocfcloud/ocfcloud/authz"
	"github.com/ocfcloud/ocfcloud/internal/loadgen"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// Options shape a benchmark run.
type Options struct {
	Workers  int           // concurrent HTTP clients; default 64
	Duration time.Duration // length of each measured run; default 5 s
	// DataDir holds the embedded FerretDB; default a temporary directory,
	// removed afterwards.
	DataDir string
	// SkipRefresh leaves out the refresh_token run, whose every grant
	// writes to the database.
	SkipRefresh bool
}

const adminPassword = "bench-admin-password"

// Env is an in-process authz on a real listener with a registered native
// app and a web app, ready to be loaded.
type Env struct {
	URL                    string
	NativeID, NativeSecret string
	WebID, WebSecret       string
	Client                 *http.Client

	closers        []func()
	ceilingURL     string
	cleanupDir     string
	refreshTokens  []string // one chain per worker
	nativeForm     string
	nativeAuthHead string
}

// Start brings up FerretDB, authz with the token endpoint's rate limits off,
// and the ES256 ceiling server, and registers the apps.
func Start(ctx context.Context, o Options) (_ *Env, err error) {
	e := &Env{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	dir := o.DataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ocfcloud-tokenbench-"); err != nil {
			return nil, err
		}
		e.cleanupDir = dir
	}
	f, err := platform.StartFerret(dir, nil)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, f.Shutdown)
	mc, err := platform.ConnectMongo(ctx, f.URI())
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { _ = mc.Disconnect(context.Background()) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.URL = "http://" + ln.Addr().String()
	srv, err := authz.New(ctx, authz.Config{
		Issuer:        e.URL,
		AdminPassword: adminPassword,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The generator is one source IP and one client.
		TokenRateIP: -1, TokenRateClient: -1,
		RefreshLimitPerClient: 100_000, RefreshLimitPerUser: 100_000,
	}, mc.Database("tokenbench"))
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	e.closers = append(e.closers, srv.Close)
	mux := http.NewServeMux()
	srv.Register(mux)
	e.serve(ln, mux)

	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.ceilingURL = "http://" + cln.Addr().String() + "/sign"
	ceiling, err := ceilingHandler(e.URL)
	if err != nil {
		_ = cln.Close()
		return nil, err
	}
	e.serve(cln, ceiling)

	workers := max(o.Workers, 1)
	e.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: workers * 2, MaxIdleConnsPerHost: workers * 2, IdleConnTimeout: time.Minute,
	}}
	admin, err := e.password("ocfcloud-cli", "", "admin", adminPassword, "")
	if err != nil {
		return nil, fmt.Errorf("admin login: %w", err)
	}
	if e.NativeID, e.NativeSecret, err = e.register(ctx, admin.AccessToken, "bench native", "native"); err != nil {
		return nil, err
	}
	if e.WebID, e.WebSecret, err = e.register(ctx, admin.AccessToken, "bench web", "web"); err != nil {
		return nil, err
	}
	e.nativeForm = url.Values{"grant_type": {"client_credentials"}}.Encode()
	e.nativeAuthHead = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(e.NativeID)+":"+url.QueryEscape(e.NativeSecret)))
	return e, nil
}

func (e *Env) serve(ln net.Listener, h http.Handler) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	e.closers = append(e.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	})
}

// Close stops everything Start started.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
	if e.cleanupDir != "" {
		_ = os.RemoveAll(e.cleanupDir)
	}
}

type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Error        string `json:"error"`
}

func (e *Env) postToken(ctx context.Context, form, authHeader string) (*tokenAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+"/oauth/token", strings.NewReader(form))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authHeader != "" {
		req.Header.Set("Authorization", authHeader)
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var a tokenAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return nil, fmt.Errorf("token endpoint answered %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("token endpoint answered %d %s", resp.StatusCode, a.Error)
	}
	return &a, nil
}

func (e *Env) password(clientID, secret, username, password, scope string) (*tokenAnswer, error) {
	f := url.Values{"grant_type": {"password"}, "client_id": {clientID}, "username": {username}, "password": {password}}
	if secret != "" {
		f.Set("client_secret", secret)
	}
	if scope != "" {
		f.Set("scope", scope)
	}
	return e.postToken(context.Background(), f.Encode(), "")
}

func (e *Env) register(ctx context.Context, bearer, name, typ string) (string, string, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "type": typ})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+"/api/v1/apps", strings.NewReader(string(body)))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := e.Client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var app struct{ ClientID, ClientSecret string }
	if err := json.NewDecoder(resp.Body).Decode(&app); err != nil || resp.StatusCode != http.StatusCreated {
		return "", "", fmt.Errorf("register %s app: status %d %v", typ, resp.StatusCode, err)
	}
	return app.ClientID, app.ClientSecret, nil
}

// ClientCredentials makes one client_credentials grant of the native app
// with client_secret_basic.
func (e *Env) ClientCredentials(ctx context.Context) error {
	a, err := e.postToken(ctx, e.nativeForm, e.nativeAuthHead)
	if err == nil && a.AccessToken == "" {
		err = errors.New("no access token")
	}
	return err
}

// PrepareRefresh gives each of n workers its own refresh token chain.
func (e *Env) PrepareRefresh(n int) error {
	e.refreshTokens = make([]string, n)
	for i := range n {
		a, err := e.password(e.WebID, e.WebSecret, "admin", adminPassword, "offline_access")
		if err != nil {
			return fmt.Errorf("refresh token %d: %w", i, err)
		}
		e.refreshTokens[i] = a.RefreshToken
	}
	return nil
}

// Refresh rotates worker's refresh token once.
func (e *Env) Refresh(ctx context.Context, worker int) error {
	f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {e.refreshTokens[worker]},
		"client_id": {e.WebID}, "client_secret": {e.WebSecret}}
	a, err := e.postToken(ctx, f.Encode(), "")
	if err != nil {
		return err
	}
	e.refreshTokens[worker] = a.RefreshToken
	return nil
}

// Ceiling calls the bare handler that signs one ES256 JWT per request.
func (e *Env) Ceiling(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ceilingURL, strings.NewReader(e.nativeForm))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ceiling answered %d", resp.StatusCode)
	}
	return nil
}

// ceilingHandler signs one ES256 JWT with claims like authz's per request
// and answers it as JSON: what a token endpoint costs with nothing else.
func ceilingHandler(issuer string) (http.Handler, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "ceiling"}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return nil, err
	}
	type claims struct {
		Iss      string `json:"iss"`
		Sub      string `json:"sub"`
		Aud      string `json:"aud"`
		Exp      int64  `json:"exp"`
		Iat      int64  `json:"iat"`
		Jti      string `json:"jti"`
		Scope    string `json:"scope"`
		ClientID string `json:"client_id"`
	}
	type answer struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		jti := make([]byte, 16)
		_, _ = rand.Read(jti)
		payload, _ := json.Marshal(claims{
			Iss: issuer, Sub: "00000000-0000-4000-8000-000000000000", Aud: "ocfcloud",
			Exp: now.Add(30 * time.Minute).Unix(), Iat: now.Unix(), Jti: base64.RawURLEncoding.EncodeToString(jti),
			Scope: "r:deviceinformation:* r:resources:* w:resources:* w:subscriptions:*", ClientID: "ceiling",
		})
		jws, err := signer.Sign(payload)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		tok, _ := jws.CompactSerialize()
		body, _ := json.Marshal(answer{AccessToken: tok, TokenType: "Bearer", ExpiresIn: 1800})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	}), nil
}

// Run measures client_credentials and refresh_token grants per second
// against an in-process authz, and a bare ES256-signing handler as the
// ceiling, and prints a table.
func Run(ctx context.Context, o Options, out io.Writer) error {
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	fmt.Fprintf(out, "setting up: authz with embedded FerretDB, a native and a web app\n")
	e, err := Start(ctx, o)
	if err != nil {
		return fmt.Errorf("token bench: %w", err)
	}
	defer e.Close()
	lo := loadgen.Options{Workers: o.Workers, Duration: o.Duration}
	var rows []loadgen.Row

	fmt.Fprintf(out, "measuring: %d workers, %s per run\n", o.Workers, o.Duration)
	// The ceiling runs before and after the grant run and the ratio uses
	// their mean, so load from elsewhere on a shared machine skews it less.
	fmt.Fprintf(out, "  ES256 ceiling...\n")
	ceiling := loadgen.Run(ctx, lo, func(ctx context.Context, _ int) error { return e.Ceiling(ctx) })
	fmt.Fprintf(out, "  client_credentials...\n")
	cc := loadgen.Run(ctx, lo, func(ctx context.Context, _ int) error { return e.ClientCredentials(ctx) })
	fmt.Fprintf(out, "  ES256 ceiling again...\n")
	ceiling2 := loadgen.Run(ctx, lo, func(ctx context.Context, _ int) error { return e.Ceiling(ctx) })
	ceilingRate := (ceiling.PerSecond() + ceiling2.PerSecond()) / 2
	rows = append(rows,
		loadgen.Row{Name: "bare net/http, one ES256 JWT per request (ceiling, before)", Result: ceiling},
		loadgen.Row{Name: "client_credentials grant (client_secret_basic)", Result: cc, Note: ratio(cc, ceilingRate)},
		loadgen.Row{Name: "bare net/http, one ES256 JWT per request (ceiling, after)", Result: ceiling2})
	if !o.SkipRefresh {
		fmt.Fprintf(out, "  refresh_token (preparing %d chains)...\n", o.Workers)
		if err := e.PrepareRefresh(o.Workers); err != nil {
			return fmt.Errorf("token bench: %w", err)
		}
		// Each worker owns its chain; no warm-up, which would rotate it
		// on a schedule the measurement does not see.
		rlo := lo
		rlo.Warmup = -1
		rt := loadgen.Run(ctx, rlo, e.Refresh)
		rows = append(rows, loadgen.Row{Name: "refresh_token grant (rotation, FerretDB writes)", Result: rt, Note: ratio(rt, ceilingRate)})
	}
	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; load generator in the same process%s\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadAverage())
	loadgen.WriteTable(out, rows)
	for _, r := range rows {
		if r.Result.FirstError != nil {
			fmt.Fprintf(out, "\n%s: first error: %v\n", r.Name, r.Result.FirstError)
		}
	}
	return nil
}

func ratio(r loadgen.Result, ceiling float64) string {
	if ceiling == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f %% of the ceiling (mean of before and after)", 100*r.PerSecond()/ceiling)
}

// loadAverage reports the machine's load, which on a shared machine says
// how far the absolute numbers can be trusted.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return "; load average " + strings.Join(f[:3], " ")
}
