package coapgateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ids"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

func (g *Gateway) backendCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.cfg.BackendTimeout)
}

// errNATSDown means the gateway is disconnected from NATS.
var errNATSDown = errors.New("disconnected from NATS")

// publishEvent is s.publishNow for a request handler, refused at once while
// the gateway is disconnected from NATS. Published then, an event would wait
// the whole BackendTimeout for its ack, longer than a device waits for its
// answer (iotivity-lite resends sign-up after 2 s), so the device would see
// silence rather than 5.03; and nats.go would keep the event in its
// reconnect buffer and store it after the outage, so a request answered 5.03
// would take effect anyway: a device whose sign-in was refused would be
// shown online for good.
func (g *Gateway) publishEvent(ctx context.Context, s *session, owner, deviceID string, t events.Type, fill func(*events.Envelope)) error {
	if !g.cfg.NATS.IsConnected() {
		return fmt.Errorf("publish %s %s: %w", t, deviceID, errNATSDown)
	}
	return s.publishNow(ctx, owner, deviceID, t, fill)
}

func (g *Gateway) handleNotFound(w *responseWriter, r *pool.Message) {
	s := w.s
	if signedIn, _, _ := s.identity(); !signedIn {
		respondError(w, codes.Unauthorized, "sign in first")
		return
	}
	respondError(w, codes.NotFound, "no such resource on the cloud")
}

// handleAccount is sign-up (POST) and sign-off (DELETE).
func (g *Gateway) handleAccount(w *responseWriter, r *pool.Message) {
	s := w.s
	switch r.Code() {
	case codes.POST:
		g.signUp(s, w, r)
	case codes.DELETE:
		g.signOff(s, w, r)
	default:
		respondError(w, codes.MethodNotAllowed, "use POST to sign up or DELETE to sign off")
	}
}

func (g *Gateway) signUp(s *session, w *responseWriter, r *pool.Message) {
	var req ocf.SignUpRequest
	if err := decodeBody(r, &req); err != nil {
		respondError(w, codes.BadRequest, "sign-up: "+err.Error())
		return
	}
	if !ids.IsUUID(req.DeviceID) {
		respondError(w, codes.BadRequest, "sign-up: di must be a UUID")
		return
	}
	if req.AccessToken == "" {
		respondError(w, codes.BadRequest, "sign-up: accesstoken (the onboarding code) is required")
		return
	}
	if err := s.checkCertIdentity(req.DeviceID); err != nil {
		s.authFailed()
		respondError(w, codes.Forbidden, "sign-up: "+err.Error())
		return
	}
	if !g.cfg.NATS.IsConnected() {
		// Sign-up ends with an event that cannot be stored now: keep the
		// single-use code unspent. Another authz replica would refuse the
		// retry of a code exchanged here (4.01), and the device would give up.
		respondError(w, codes.ServiceUnavailable, "sign-up: message bus unavailable, retry")
		return
	}
	ctx, cancel := g.backendCtx()
	defer cancel()
	tok, err := g.authz.exchangeCode(ctx, req.AccessToken, req.DeviceID)
	if errors.Is(err, errGrantRejected) {
		s.logger().Info("sign-up rejected", "device_id", req.DeviceID)
		s.authFailed()
		respondError(w, codes.Unauthorized, "sign-up: the onboarding code is invalid, expired or used")
		return
	}
	if err != nil {
		s.logger().Warn("sign-up: authz unavailable", "device_id", req.DeviceID, "err", err)
		respondError(w, codes.ServiceUnavailable, "sign-up: authorization service unavailable, retry")
		return
	}
	if err := g.publishEvent(ctx, s, tok.UserID, req.DeviceID, events.DeviceRegistered, nil); err != nil {
		s.logger().Warn("sign-up: cannot record device", "device_id", req.DeviceID, "err", err)
		respondError(w, codes.ServiceUnavailable, "sign-up: event store unavailable, retry")
		return
	}
	s.mu.Lock()
	s.signedUp = req.DeviceID
	s.issued = &issuedToken{token: tok.AccessToken, deviceID: req.DeviceID, userID: tok.UserID}
	if tok.ExpiresIn > 0 {
		s.issued.expires = g.cfg.Now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	s.mu.Unlock()
	s.logger().Info("device signed up", "device_id", req.DeviceID, "user_id", tok.UserID)
	respondCBOR(w, codes.Changed, ocf.SignUpResponse{
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		UserID:       tok.UserID,
		ExpiresIn:    expiresIn(tok.ExpiresIn),
		RedirectURI:  "",
	})
}

func expiresIn(seconds int64) int64 {
	if seconds <= 0 {
		return -1
	}
	return seconds
}

// signOff removes the device: from the query (di, uid, accesstoken) as the
// OCF spec describes, or from the signed-in session.
func (g *Gateway) signOff(s *session, w *responseWriter, r *pool.Message) {
	q := queryValues(r)
	di, tokenRaw := q["di"], q["accesstoken"]
	signedIn, sdi, suid := s.identity()
	owner := ""
	ctx, cancel := g.backendCtx()
	defer cancel()
	switch {
	case tokenRaw != "":
		c, err := g.cfg.Verifier.Verify(ctx, tokenRaw)
		if err != nil || (di != "" && c.DeviceID != di) || (q["uid"] != "" && c.Subject != q["uid"]) {
			s.authFailed()
			respondError(w, codes.Unauthorized, "sign-off: invalid access token")
			return
		}
		di, owner = c.DeviceID, c.Subject
	case signedIn && (di == "" || di == sdi):
		di, owner = sdi, suid
	default:
		respondError(w, codes.Unauthorized, "sign-off: sign in or give di, uid and accesstoken")
		return
	}
	if err := s.checkCertIdentity(di); err != nil {
		s.authFailed()
		respondError(w, codes.Forbidden, "sign-off: "+err.Error())
		return
	}
	// Every connection of the device on this gateway stops publishing before
	// device_unregistered goes out, so no later event registers it again.
	local := g.sessionsOf(di)
	if !slices.Contains(local, s) {
		local = append(local, s)
	}
	for _, o := range local {
		o.setGone(di, true)
	}
	if err := g.publishEvent(ctx, s, owner, di, events.DeviceUnregistered, nil); err != nil {
		for _, o := range local {
			o.setGone(di, false)
		}
		respondError(w, codes.ServiceUnavailable, "sign-off: event store unavailable, retry")
		return
	}
	for _, o := range local {
		o.signedOff(di)
	}
	s.logger().Info("device signed off", "device_id", di)
	_ = w.SetResponse(codes.Deleted, 0, nil)
	// The device no longer exists: its connections have nothing left to do.
	for _, o := range local {
		o.closeSoon()
	}
}

func (g *Gateway) handleSession(w *responseWriter, r *pool.Message) {
	s := w.s
	if r.Code() != codes.POST {
		respondError(w, codes.MethodNotAllowed, "use POST to sign in or out")
		return
	}
	var req ocf.SessionRequest
	if err := decodeBody(r, &req); err != nil {
		respondError(w, codes.BadRequest, "session: "+err.Error())
		return
	}
	ctx, cancel := g.backendCtx()
	defer cancel()
	if !req.Login {
		signedIn, di, _ := s.identity()
		if signedIn && (req.DeviceID == "" || req.DeviceID == di) {
			s.signOut()
			// The answer says commands no longer reach the device here, so
			// the UNSUB must have reached the server first: a command sent
			// right after would otherwise still be routed to this gateway,
			// which no longer listens, and time out instead of failing at
			// once with no gateway. Sign-outs are rare; the round trip is
			// cheap.
			if err := g.cfg.NATS.FlushWithContext(ctx); err != nil {
				s.logger().Debug("sign-out: flush", "err", err)
			}
		}
		respondCBOR(w, codes.Changed, map[string]any{})
		return
	}
	if req.DeviceID == "" || req.UserID == "" || req.AccessToken == "" {
		respondError(w, codes.BadRequest, "sign-in: di, uid and accesstoken are required")
		return
	}
	if err := s.checkCertIdentity(req.DeviceID); err != nil {
		s.authFailed()
		respondError(w, codes.Forbidden, "sign-in: "+err.Error())
		return
	}
	c, err := s.verifyAccessToken(ctx, req.AccessToken)
	if err != nil || c.DeviceID != req.DeviceID || c.Subject != req.UserID {
		s.logger().Info("sign-in rejected", "device_id", req.DeviceID)
		s.authFailed()
		respondError(w, codes.Unauthorized, "sign-in: invalid or expired access token")
		return
	}
	if err := s.subscribeCommands(c.DeviceID); err != nil {
		s.logger().Warn("sign-in: cannot subscribe to commands", "err", err)
		respondError(w, codes.ServiceUnavailable, "sign-in: message bus unavailable, retry")
		return
	}
	online, _ := json.Marshal(events.OnlineContent{Gateway: g.cfg.ID})
	if err := g.publishEvent(ctx, s, c.Subject, c.DeviceID, events.DeviceOnline, func(e *events.Envelope) {
		e.ContentType, e.Content = events.ContentTypeJSON, online
	}); err != nil {
		if signedIn, _, _ := s.identity(); !signedIn {
			s.unsubscribeCommands()
		}
		respondError(w, codes.ServiceUnavailable, "sign-in: event store unavailable, retry")
		return
	}
	wasSignedIn, prevDI, _ := s.identity()
	s.mu.Lock()
	fresh := s.signedUp == c.DeviceID
	s.mu.Unlock()
	linksGen := s.signIn(c.DeviceID, c.Subject, c.ExpiresAt)
	s.logger().Info("device signed in")
	exp := int64(-1)
	if !c.ExpiresAt.IsZero() {
		exp = max(int64(time.Until(c.ExpiresAt).Seconds()), 0)
	}
	respondCBOR(w, codes.Changed, ocf.SessionResponse{ExpiresIn: exp})
	// A device that reconnects only signs in: observe what it published
	// before. A sign-in after a refresh on the same connection has them, and
	// one right after sign-up has none.
	if !fresh && (!wasSignedIn || prevDI != c.DeviceID) {
		go g.restoreLinks(s, c.Subject, c.DeviceID, linksGen)
	}
}

func (g *Gateway) restoreLinks(s *session, owner, deviceID string, gen uint64) {
	ctx, cancel := s.callContext(g.cfg.BackendTimeout)
	defer cancel()
	d, err := g.registry.Get(ctx, registryapi.GetRequest{Caller: registryapi.Caller{UserID: owner}, DeviceID: deviceID})
	if err != nil {
		if !errors.Is(err, registryapi.ErrNotFound) {
			s.logger().Warn("cannot load published links", "err", err)
		}
		return
	}
	// The registry may lag behind a publish or unpublish the device made in
	// the meantime on this connection; then the connection's view wins.
	if !s.restoreLinksIf(gen, d.Links) {
		return
	}
	s.observe(d.Links)
}

func (g *Gateway) handleTokenRefresh(w *responseWriter, r *pool.Message) {
	s := w.s
	if r.Code() != codes.POST {
		respondError(w, codes.MethodNotAllowed, "use POST to refresh a token")
		return
	}
	var req ocf.TokenRefreshRequest
	if err := decodeBody(r, &req); err != nil {
		respondError(w, codes.BadRequest, "token refresh: "+err.Error())
		return
	}
	if !ids.IsUUID(req.DeviceID) || req.RefreshToken == "" {
		respondError(w, codes.BadRequest, "token refresh: di and refreshtoken are required")
		return
	}
	if err := s.checkCertIdentity(req.DeviceID); err != nil {
		s.authFailed()
		respondError(w, codes.Forbidden, "token refresh: "+err.Error())
		return
	}
	ctx, cancel := g.backendCtx()
	defer cancel()
	tok, err := g.authz.refresh(ctx, req.RefreshToken, req.DeviceID)
	if errors.Is(err, errGrantRejected) {
		s.authFailed()
		respondError(w, codes.Unauthorized, "token refresh: invalid refresh token")
		return
	}
	if err != nil {
		respondError(w, codes.ServiceUnavailable, "token refresh: authorization service unavailable, retry")
		return
	}
	respondCBOR(w, codes.Changed, ocf.TokenRefreshResponse{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresIn: expiresIn(tok.ExpiresIn)})
}

// handleRD publishes (POST) and unpublishes (DELETE) resource links.
func (g *Gateway) handleRD(w *responseWriter, r *pool.Message) {
	s := w.s
	signedIn, di, uid := s.identity()
	if !signedIn {
		respondError(w, codes.Unauthorized, "sign in first")
		return
	}
	ctx, cancel := g.backendCtx()
	defer cancel()
	switch r.Code() {
	case codes.POST:
		var req ocf.PublishRequest
		if err := decodeBody(r, &req); err != nil {
			respondError(w, codes.BadRequest, "publish: "+err.Error())
			return
		}
		if req.DeviceID != "" && req.DeviceID != di {
			respondError(w, codes.Forbidden, "publish: di is not the signed-in device")
			return
		}
		if len(req.Links) == 0 {
			respondError(w, codes.BadRequest, "publish: no links")
			return
		}
		for i := range req.Links {
			l := &req.Links[i]
			if !strings.HasPrefix(l.Href, "/") || len(l.Href) > 512 {
				respondError(w, codes.BadRequest, fmt.Sprintf("publish: link %d: href must be an absolute path", i))
				return
			}
			if l.DeviceID != "" && l.DeviceID != di {
				respondError(w, codes.Forbidden, fmt.Sprintf("publish: link %d belongs to another device", i))
				return
			}
			l.DeviceID = di
			if l.InstanceID == 0 {
				l.InstanceID = instanceID(l.Href)
			}
		}
		if err := g.publishEvent(ctx, s, uid, di, events.ResourcesPublished, func(e *events.Envelope) {
			e.ContentType, e.Content = events.ContentTypeJSON, publishedContent(req.Links)
		}); err != nil {
			respondError(w, codes.ServiceUnavailable, "publish: event store unavailable, retry")
			return
		}
		s.setLinks(req.Links)
		req.DeviceID = di
		respondCBOR(w, codes.Changed, req)
		go s.observe(req.Links)
	case codes.DELETE:
		q := queryValues(r)
		if q["di"] != "" && q["di"] != di {
			respondError(w, codes.Forbidden, "unpublish: di is not the signed-in device")
			return
		}
		hrefs, err := s.hrefsOf(queryAll(r, "ins"))
		if err != nil {
			respondError(w, codes.BadRequest, "unpublish: "+err.Error())
			return
		}
		if len(hrefs) > 0 {
			if err := g.publishEvent(ctx, s, uid, di, events.ResourcesUnpublished, func(e *events.Envelope) {
				e.ContentType, e.Content = events.ContentTypeJSON, unpublishedContent(hrefs)
			}); err != nil {
				respondError(w, codes.ServiceUnavailable, "unpublish: event store unavailable, retry")
				return
			}
			s.removeLinks(hrefs)
		}
		_ = w.SetResponse(codes.Deleted, 0, nil)
	default:
		respondError(w, codes.MethodNotAllowed, "use POST to publish or DELETE to unpublish")
	}
}

// handleRes answers the cloud's view of the signed-in device's links.
func (g *Gateway) handleRes(w *responseWriter, r *pool.Message) {
	s := w.s
	signedIn, di, _ := s.identity()
	if !signedIn {
		respondError(w, codes.Unauthorized, "sign in first")
		return
	}
	if r.Code() != codes.GET {
		respondError(w, codes.MethodNotAllowed, "use GET")
		return
	}
	s.mu.Lock()
	links := make([]ocf.Link, 0, len(s.links))
	for _, l := range s.links {
		l.Href = "/" + di + l.Href
		links = append(links, l)
	}
	s.mu.Unlock()
	respondCBOR(w, codes.Content, links)
}

// hrefsOf resolves instance ids to hrefs; no ids means every link.
func (s *session) hrefsOf(ins []string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if len(ins) == 0 {
		for _, l := range s.links {
			out = append(out, l.Href)
		}
		return out, nil
	}
	for _, v := range ins {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ins %q is not an integer", v)
		}
		for _, l := range s.links {
			if l.InstanceID == n {
				out = append(out, l.Href)
			}
		}
	}
	return out, nil
}

// instanceID derives a stable positive instance id from an href (FNV-1a).
func instanceID(href string) int64 {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(href); i++ {
		h ^= uint64(href[i])
		h *= 1099511628211
	}
	return int64(h>>2) | 1
}

func queryValues(r *pool.Message) map[string]string {
	out := map[string]string{}
	qs, _ := r.Queries()
	for _, q := range qs {
		k, v, _ := strings.Cut(q, "=")
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}

func queryAll(r *pool.Message, key string) []string {
	var out []string
	qs, _ := r.Queries()
	for _, q := range qs {
		if k, v, _ := strings.Cut(q, "="); k == key {
			out = append(out, v)
		}
	}
	return out
}

// sessionsOf returns the sessions on this gateway bound to deviceID.
func (g *Gateway) sessionsOf(deviceID string) []*session {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*session
	for _, s := range g.sessions {
		s.mu.Lock()
		if s.deviceID == deviceID {
			out = append(out, s)
		}
		s.mu.Unlock()
	}
	return out
}
