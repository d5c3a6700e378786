package devicesim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Onboarding is what the portal's "Onboard Device" gives (POST
// /api/v1/onboarding-codes): the single-use code (at) and where to connect.
type Onboarding struct {
	APN       string `json:"apn"`
	CIS       string `json:"cis"`
	CISSecure string `json:"cisSecure"`
	SID       string `json:"sid"`
	AT        string `json:"at"`
	CloudCA   string `json:"cloudCA"`
}

// CodeSource hands out one onboarding code per device: codes are single use,
// so a fleet needs as many as it has devices.
type CodeSource interface {
	Next(ctx context.Context) (Onboarding, error)
}

// ErrNoMoreCodes is returned when a finite code source is exhausted.
var ErrNoMoreCodes = errors.New("no more onboarding codes")

// FileCodes reads one code per line (blank lines and # comments skipped).
type FileCodes struct {
	mu    sync.Mutex
	codes []string
}

// LoadCodesFile reads a codes file.
func LoadCodesFile(path string) (*FileCodes, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("codes file: %w", err)
	}
	defer f.Close()
	var codes []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			codes = append(codes, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("codes file %s: %w", path, err)
	}
	return &FileCodes{codes: codes}, nil
}

// Len is the number of codes left.
func (f *FileCodes) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.codes)
}

// Next returns the next code; CIS and the rest come from the command line.
func (f *FileCodes) Next(context.Context) (Onboarding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.codes) == 0 {
		return Onboarding{}, ErrNoMoreCodes
	}
	c := f.codes[0]
	f.codes = f.codes[1:]
	return Onboarding{AT: c}, nil
}

// APICodes fetches a fresh code per device from the cloud's API with a
// Bearer token, as the portal does.
type APICodes struct {
	BaseURL string // e.g. http://127.0.0.1:8080
	Token   string
	HTTP    *http.Client
}

func (a *APICodes) client() *http.Client {
	if a.HTTP != nil {
		return a.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// Next asks POST /api/v1/onboarding-codes for a code.
func (a *APICodes) Next(ctx context.Context) (Onboarding, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.BaseURL, "/")+"/api/v1/onboarding-codes", nil)
	if err != nil {
		return Onboarding{}, err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	resp, err := a.client().Do(req)
	if err != nil {
		return Onboarding{}, fmt.Errorf("onboarding code: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return Onboarding{}, fmt.Errorf("onboarding code: status %d: %.200s", resp.StatusCode, body)
	}
	var o Onboarding
	if err := json.Unmarshal(body, &o); err != nil || o.AT == "" {
		return Onboarding{}, fmt.Errorf("onboarding code: unexpected answer %.200s", body)
	}
	return o, nil
}

// PasswordToken gets an access token for username with the OAuth password
// grant through the built-in CLI client (ocfcloud-cli).
func PasswordToken(ctx context.Context, httpClient *http.Client, baseURL, username, password string) (string, error) {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 10 * time.Second}
	}
	form := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {username}, "password": {password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(baseURL, "/")+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tok struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	_ = json.Unmarshal(body, &tok)
	if resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		return "", fmt.Errorf("token: status %d %s", resp.StatusCode, tok.Error)
	}
	return tok.AccessToken, nil
}
