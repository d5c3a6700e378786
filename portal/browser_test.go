package portal_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

const adminPassword = "portal-admin-secret"

// browser starts headless Chromium for a test; without Chromium the test
// fails in CI (which installs it) and is skipped on a developer machine.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; .ci/run installs it")
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatal(err)
	}
	return ctx
}

type screens struct {
	t   *testing.T
	ctx context.Context
	dir string
	n   int
}

// shot saves a full-page screenshot of the current screen.
func (s *screens) shot(name string) {
	s.t.Helper()
	png, err := chromedp.Run(s.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Fatalf("screenshot %s: %v", name, err)
	}
	s.n++
	file := filepath.Join(s.dir, strings.ReplaceAll(time.Now().Format("150405"), ":", "")+"-"+itoa(s.n)+"-"+name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func itoa(n int) string { return string(rune('0'+n/10)) + string(rune('0'+n%10)) }

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(v)
}

func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	step, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(step, actions...); err != nil {
		// Say where the browser was and what it showed.
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 500) : ""`))
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			_ = os.WriteFile(filepath.Join(t.ArtifactDir(), "failure.png"), png, 0o644)
		}
		t.Fatalf("%s: %v\nat %s\n%s", what, err, loc, body)
	}
}

// waitJS polls a JavaScript condition across page loads (a redirect ends
// one evaluation; the next page is asked again).
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 500) : ""`))
			t.Fatalf("%s: %v\nat %s\n%s", what, err, loc, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPortalOnboardsControlsAndManagesApps walks the portal as a person
// would, in a real headless Chromium against a live in-process cloud.
func TestPortalOnboardsControlsAndManagesApps(t *testing.T) {
	ctx := browser(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "127.0.0.1:0", CoAPSAddr: "-",
		AdminPassword: adminPassword, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := c.PublicURL()
	s := &screens{t: t, ctx: ctx, dir: t.ArtifactDir()}

	// Sign in: the portal sends the browser to authz's login page (PKCE).
	do(t, ctx, "open portal", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	s.shot("welcome")
	do(t, ctx, "sign in", chromedp.Click(chromedp.CSS("#signin")), chromedp.WaitVisible(chromedp.CSS("#username")))
	s.shot("login")
	do(t, ctx, "login form",
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), adminPassword),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	// The portal is a first-party client: authz asks no consent for it, but
	// if a consent page comes, allow.
	waitJS(t, ctx, "back from authz", `!!(document.querySelector('button[value="allow"]') || document.querySelector('#who-name:not(:empty)'))`)
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector('button[value="allow"]')`)); n {
		s.shot("consent")
		do(t, ctx, "consent", chromedp.Click(chromedp.CSS(`button[value="allow"]`)))
	}
	do(t, ctx, "devices screen", chromedp.WaitVisible(chromedp.CSS(`#who-name`)), chromedp.WaitVisible(chromedp.CSS(`input[type="search"]`)))
	if who := text(t, ctx, "#who-name"); who != "admin" {
		t.Fatalf("signed in as %q", who)
	}
	s.shot("devices-empty")

	// Onboard Device: a fresh code; a simulated device uses it.
	do(t, ctx, "onboard screen", chromedp.Navigate(base+"/#/onboard"), chromedp.WaitVisible(chromedp.CSS(`main button`)),
		chromedp.Click(chromedp.CSS(`main button`)), chromedp.WaitVisible(chromedp.CSS(`#ca`)))
	s.shot("onboard")
	values, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('dl.fields dd code')].map(e => e.textContent)`))
	// apn, cis, sid, at: the cloud runs no coaps+tcp listener here, so no
	// secured cis is shown.
	if err != nil || len(values) != 4 || !strings.HasPrefix(values[1], "coap+tcp://") {
		t.Fatalf("onboarding values %v %v", values, err)
	}
	apn, cis, at := values[0], values[1], values[3]
	dev, err := devicesim.New(devicesim.Config{CIS: cis, APN: apn, AccessToken: at, Name: "portal light", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	dctx, stopDevice := context.WithCancel(context.Background())
	defer stopDevice()
	go func() { _ = dev.Run(dctx) }()

	// The device turns online in the list (the page polls).
	do(t, ctx, "device online", chromedp.Navigate(base+"/#/devices"), chromedp.WaitVisible(chromedp.CSS(`span.badge.online`)))
	s.shot("devices-online")

	// Switch the light on from the device page.
	do(t, ctx, "device page", chromedp.Click(chromedp.CSS(`td a`)), chromedp.WaitVisible(chromedp.CSS(`pre[aria-label="Content of /light/1"]`)))
	s.shot("device")
	do(t, ctx, "switch on", chromedp.Click(chromedp.Search(`//button[text()="Switch on"]`)), chromedp.WaitVisible(chromedp.CSS(`p.ok`)))
	if on, _, _ := dev.Light(); !on {
		t.Fatal("the light did not switch on")
	}
	s.shot("device-switched")

	// Apps: create a web app and use its secret with the password grant.
	do(t, ctx, "apps screen", chromedp.Navigate(base+"/#/apps"), chromedp.WaitVisible(chromedp.CSS(`#app-name`)),
		chromedp.SendKeys(chromedp.CSS(`#app-name`), "my script"),
		chromedp.SetValue(chromedp.CSS(`#app-type`), "web"),
		chromedp.Click(chromedp.Search(`//button[text()="Create app"]`)),
		chromedp.WaitVisible(chromedp.CSS(`div.once`)))
	s.shot("app-created")
	creds, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('div.once dd code')].map(e => e.textContent)`))
	if err != nil || len(creds) != 2 {
		t.Fatalf("app credentials %v %v", creds, err)
	}
	form := url.Values{"grant_type": {"password"}, "username": {"admin"}, "password": {adminPassword}, "scope": {"r:deviceinformation:*"}}
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(creds[0])+":"+url.QueryEscape(creds[1]))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("password grant with the app's secret: %d", resp.StatusCode)
	}

	// Issue an access token for the app, use it, revoke it.
	do(t, ctx, "app page", chromedp.Click(chromedp.CSS(`td a`)), chromedp.WaitVisible(chromedp.CSS(`#expires`)),
		chromedp.Click(chromedp.Search(`//button[text()="New token"]`)), chromedp.WaitVisible(chromedp.CSS(`div.once dd code`)))
	s.shot("app-token")
	issued := text(t, ctx, "div.once dd code")
	call := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/devices", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := call(issued); st != http.StatusOK {
		t.Fatalf("issued token: %d", st)
	}
	do(t, ctx, "revoke", chromedp.Click(chromedp.Search(`//button[text()="Revoke"]`)))
	deadline := time.Now().Add(15 * time.Second)
	for call(issued) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("revoked token still accepted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.shot("app-token-revoked")

	// Phone width: the list still works (cards instead of a wide table).
	do(t, ctx, "phone width", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/#/devices"), chromedp.WaitVisible(chromedp.CSS(`span.badge.online`)))
	s.shot("devices-phone")
}
