package devicesim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// errNoAnswer marks a request the cloud did not answer in time.
var errNoAnswer = errors.New("no answer")

// statusError is a non-success CoAP answer.
type statusError struct {
	code codes.Code
	diag string
}

func (e *statusError) Error() string {
	if e.diag == "" {
		return e.code.String()
	}
	return fmt.Sprintf("%v: %s", e.code, e.diag)
}

func codeOf(err error) codes.Code {
	var se *statusError
	if errors.As(err, &se) {
		return se.code
	}
	return 0
}

// post sends one OCF request and decodes a 2.04/2.01/2.05 answer into out.
func post(ctx context.Context, conn *client.Conn, timeout time.Duration, path string, body, out any) error {
	payload, err := ocf.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := conn.NewPostRequest(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(payload), ocfOptions()...)
	if err != nil {
		return fmt.Errorf("build %s: %w", path, err)
	}
	defer conn.ReleaseMessage(req)
	resp, err := conn.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil && conn.Context().Err() == nil {
			return fmt.Errorf("POST %s: %w within %v", path, errNoAnswer, timeout)
		}
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer conn.ReleaseMessage(resp)
	data, _ := resp.ReadBody()
	switch resp.Code() {
	case codes.Changed, codes.Created, codes.Content:
	default:
		diag := ""
		if cf, err := resp.ContentFormat(); err == nil && cf != ocf.ContentFormatCBOR {
			diag = string(data)
		}
		return fmt.Errorf("POST %s: %w", path, &statusError{code: resp.Code(), diag: diag})
	}
	if out != nil && len(data) > 0 {
		if err := ocf.Unmarshal(data, out); err != nil {
			return fmt.Errorf("POST %s answer: %w", path, err)
		}
	}
	return nil
}

// ensureSignedUp registers the device once per Device, retrying the same
// code every signUpRetryInterval while the cloud stays silent or fails (5.xx),
// as iotivity-lite does. 4.01 is final.
func (d *Device) ensureSignedUp(ctx context.Context, conn *client.Conn) error {
	d.credMu.Lock()
	done := d.cred.signedUp
	d.credMu.Unlock()
	if done {
		return nil
	}
	req := ocf.SignUpRequest{
		DeviceID:     d.cfg.DeviceID,
		AuthProvider: d.cfg.APN,
		AccessToken:  d.cfg.AccessToken,
		DeviceType:   "device",
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		var resp ocf.SignUpResponse
		err := post(ctx, conn, signUpRetryInterval, ocf.PathAccount, req, &resp)
		if err == nil {
			d.credMu.Lock()
			d.cred = credentials{
				signedUp:     true,
				uid:          resp.UserID,
				accessToken:  resp.AccessToken,
				refreshToken: resp.RefreshToken,
			}
			d.cred.setExpiry(start, resp.ExpiresIn)
			d.credMu.Unlock()
			d.log.Info("signed up", "user_id", resp.UserID, "expires_in", resp.ExpiresIn)
			return nil
		}
		code := codeOf(err)
		switch {
		case code == codes.Unauthorized || code == codes.Forbidden:
			return fmt.Errorf("sign-up %s: %w: %w", d.cfg.DeviceID, ErrUnauthorized, err)
		case errors.Is(err, errNoAnswer), code >= codes.InternalServerError:
			d.log.Warn("sign-up failed, retrying with the same code", "attempt", attempt, "error", err)
		default:
			return fmt.Errorf("sign-up %s: %w", d.cfg.DeviceID, err)
		}
		// The next attempt starts signUpRetryInterval after this one started.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Done():
			return fmt.Errorf("sign-up %s: connection closed", d.cfg.DeviceID)
		case <-time.After(time.Until(start.Add(signUpRetryInterval))):
		}
	}
}

// signIn starts the session, refreshing the access token first when it has
// expired and once more when the cloud answers 4.01.
func (d *Device) signIn(ctx context.Context, conn *client.Conn) error {
	d.credMu.Lock()
	expired := !d.cred.expiresAt.IsZero() && !time.Now().Before(d.cred.expiresAt)
	d.credMu.Unlock()
	refreshed := false
	if expired {
		d.log.Info("access token expired, refreshing")
		if err := d.refresh(ctx, conn); err != nil {
			return err
		}
		refreshed = true
	}
	for {
		d.credMu.Lock()
		req := ocf.SessionRequest{
			DeviceID:    d.cfg.DeviceID,
			UserID:      d.cred.uid,
			AccessToken: d.cred.accessToken,
			Login:       true,
		}
		d.credMu.Unlock()
		start := time.Now()
		var resp ocf.SessionResponse
		err := post(ctx, conn, requestTimeout, ocf.PathSession, req, &resp)
		if err == nil {
			d.credMu.Lock()
			d.cred.setExpiry(start, resp.ExpiresIn)
			d.credMu.Unlock()
			d.log.Info("signed in", "user_id", req.UserID, "expires_in", resp.ExpiresIn)
			return nil
		}
		if codeOf(err) != codes.Unauthorized || refreshed {
			if codeOf(err) == codes.Unauthorized || codeOf(err) == codes.Forbidden {
				return fmt.Errorf("sign-in %s: %w: %w", d.cfg.DeviceID, ErrUnauthorized, err)
			}
			return fmt.Errorf("sign-in %s: %w", d.cfg.DeviceID, err)
		}
		d.log.Info("sign-in rejected, refreshing the token")
		if err := d.refresh(ctx, conn); err != nil {
			return err
		}
		refreshed = true
	}
}

func (d *Device) refresh(ctx context.Context, conn *client.Conn) error {
	d.credMu.Lock()
	req := ocf.TokenRefreshRequest{
		DeviceID:     d.cfg.DeviceID,
		UserID:       d.cred.uid,
		RefreshToken: d.cred.refreshToken,
	}
	d.credMu.Unlock()
	start := time.Now()
	var resp ocf.TokenRefreshResponse
	if err := post(ctx, conn, requestTimeout, ocf.PathTokenRefresh, req, &resp); err != nil {
		if c := codeOf(err); c == codes.Unauthorized || c == codes.Forbidden {
			return fmt.Errorf("token refresh %s: %w: %w", d.cfg.DeviceID, ErrUnauthorized, err)
		}
		return fmt.Errorf("token refresh %s: %w", d.cfg.DeviceID, err)
	}
	d.credMu.Lock()
	d.cred.accessToken = resp.AccessToken
	if resp.RefreshToken != "" {
		d.cred.refreshToken = resp.RefreshToken
	}
	d.cred.setExpiry(start, resp.ExpiresIn)
	d.credMu.Unlock()
	d.log.Info("token refreshed", "expires_in", resp.ExpiresIn)
	return nil
}

// publish registers the device's links at /oic/rd.
func (d *Device) publish(ctx context.Context, conn *client.Conn) error {
	req := ocf.PublishRequest{DeviceID: d.cfg.DeviceID, Links: d.links(), TTL: publishTTL}
	var resp ocf.PublishRequest
	if err := post(ctx, conn, requestTimeout, ocf.PathRD, req, &resp); err != nil {
		return fmt.Errorf("publish %s: %w", d.cfg.DeviceID, err)
	}
	d.log.Info("published", "links", len(req.Links), "echoed", len(resp.Links))
	return nil
}

// setExpiry records an expiresin answer (seconds from start). -1 means
// never; 0, which no schema allows, is read the same way rather than as
// "expired", so a confused cloud cannot make the device refresh in a loop.
// The token is refreshed on a live connection a tenth of its lifetime (at
// most a minute) before it expires, as iotivity-lite does.
func (c *credentials) setExpiry(start time.Time, expiresIn int64) {
	if expiresIn <= 0 {
		c.expiresAt, c.refreshAt = time.Time{}, time.Time{}
		return
	}
	life := time.Duration(expiresIn) * time.Second
	c.expiresAt = start.Add(life)
	c.refreshAt = c.expiresAt.Add(-min(life/10, time.Minute))
}

func (d *Device) refreshDeadline() time.Time {
	d.credMu.Lock()
	defer d.credMu.Unlock()
	return d.cred.refreshAt
}
