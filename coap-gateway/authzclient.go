package coapgateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DeviceClientID is the built-in OAuth client that the gateway uses on behalf
// of devices.
const DeviceClientID = "ocfcloud-device"

// errGrantRejected means authz refused the code or refresh token: the device
// gets 4.01. Every other error is the backend being unavailable: 5.03.
var errGrantRejected = errors.New("grant rejected")

// tokenAnswer is authz's token endpoint answer.
type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	UserID       string `json:"user_id"`
}

type authzClient struct {
	tokenURL string
	http     *http.Client
}

func (a *authzClient) exchangeCode(ctx context.Context, code, deviceID string) (*tokenAnswer, error) {
	return a.token(ctx, url.Values{
		"grant_type": {"authorization_code"},
		"client_id":  {DeviceClientID},
		"code":       {code},
		"device_id":  {deviceID},
	})
}

func (a *authzClient) refresh(ctx context.Context, refreshToken, deviceID string) (*tokenAnswer, error) {
	return a.token(ctx, url.Values{
		"grant_type":    {"refresh_token"},
		"client_id":     {DeviceClientID},
		"refresh_token": {refreshToken},
		"device_id":     {deviceID},
	})
}

func (a *authzClient) token(ctx context.Context, form url.Values) (*tokenAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("authz token endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("authz token endpoint: %w", err)
	}
	if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized {
		var oe struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &oe)
		return nil, fmt.Errorf("%w: %s", errGrantRejected, oe.Error)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("authz token endpoint: status %d", resp.StatusCode)
	}
	var t tokenAnswer
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("authz token endpoint: %w", err)
	}
	if t.AccessToken == "" {
		return nil, errors.New("authz token endpoint: no access token")
	}
	return &t, nil
}
