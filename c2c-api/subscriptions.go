package c2capi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

// Event types each subscription level accepts (OCF C2C EventTypeDevices,
// EventTypeDevice, EventTypeResources).
var levelEventTypes = map[Level][]string{
	LevelDevices:  {"devices_registered", "devices_unregistered", "devices_online", "devices_offline"},
	LevelDevice:   {"resources_published", "resources_unpublished"},
	LevelResource: {"resource_contentchanged"},
}

// subscribeRequest is the OCF SubscribeRequest* body.
type subscribeRequest struct {
	EventsURL     string   `json:"eventsUrl"`
	EventTypes    []string `json:"eventTypes"`
	SigningSecret string   `json:"signingSecret"`
}

// startWebhooks starts the dispatcher when subscriptions are configured.
func (a *API) startWebhooks() error {
	if a.cfg.DB == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := NewDispatcher(ctx, DispatcherConfig{NATS: a.cfg.NATS, DB: a.cfg.DB, Registry: a.registry, Logger: a.cfg.Logger, Webhooks: a.cfg.Webhooks, Now: a.cfg.Now})
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	a.webhooks = d
	return nil
}

// Close stops webhook delivery; queued deliveries resume on the next start.
func (a *API) Close() {
	if a.webhooks != nil {
		a.webhooks.Close()
	}
}

// Dispatcher is the API's webhook dispatcher (nil without a database).
func (a *API) Dispatcher() *Dispatcher { return a.webhooks }

// requireScope answers 403 insufficient_scope as auth.Verifier.Require
// does, for routes whose scope depends on the path.
func requireScope(w http.ResponseWriter, r *http.Request, scope string) bool {
	if c := auth.FromContext(r.Context()); c != nil && c.HasScope(scope) {
		return true
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="insufficient_scope", scope=%q`, scope))
	httpx.WriteProblem(w, http.StatusForbidden, "the access token lacks scope "+scope)
	return false
}

// resourceSubscriptionPath splits {href...} of a resource-level
// subscription path: ".../<href>/subscriptions" or
// ".../<href>/subscriptions/<subscriptionId>".
func resourceSubscriptionPath(r *http.Request) (href, subID string, ok bool) {
	p := r.PathValue("href")
	if h, found := strings.CutSuffix(p, "/subscriptions"); found && h != "" {
		return "/" + h, "", true
	}
	i := strings.LastIndex(p, "/subscriptions/")
	if i <= 0 {
		return "", "", false
	}
	subID = p[i+len("/subscriptions/"):]
	if subID == "" || strings.Contains(subID, "/") {
		return "", "", false
	}
	return "/" + p[:i], subID, true
}

// The resource routes carry resource-level subscriptions too, because a
// ServeMux wildcard {href...} must end the pattern. Each checks the scope
// of what the path turns out to be.

func (a *API) resourceGetRoute(w http.ResponseWriter, r *http.Request) {
	if href, subID, ok := resourceSubscriptionPath(r); ok && subID != "" {
		if requireScope(w, r, auth.ScopeWriteSubscriptions) {
			a.getSubscription(w, r, LevelResource, href, subID)
		}
		return
	}
	if requireScope(w, r, auth.ScopeReadResources) {
		a.getResource(w, r)
	}
}

func (a *API) resourcePostRoute(w http.ResponseWriter, r *http.Request) {
	if href, subID, ok := resourceSubscriptionPath(r); ok && subID == "" {
		if requireScope(w, r, auth.ScopeWriteSubscriptions) {
			a.subscribe(w, r, LevelResource, r.PathValue("id"), href)
		}
		return
	}
	if requireScope(w, r, auth.ScopeWriteResources) {
		a.updateResource(w, r)
	}
}

func (a *API) resourcePutRoute(w http.ResponseWriter, r *http.Request) {
	if requireScope(w, r, auth.ScopeWriteResources) {
		a.createResource(w, r)
	}
}

func (a *API) resourceDeleteRoute(w http.ResponseWriter, r *http.Request) {
	if href, subID, ok := resourceSubscriptionPath(r); ok && subID != "" {
		if requireScope(w, r, auth.ScopeWriteSubscriptions) {
			a.deleteSubscription(w, r, LevelResource, href, subID)
		}
		return
	}
	if requireScope(w, r, auth.ScopeWriteResources) {
		a.deleteResource(w, r)
	}
}

func (a *API) subscribeDevices(w http.ResponseWriter, r *http.Request) {
	a.subscribe(w, r, LevelDevices, "", "")
}

func (a *API) subscribeDevice(w http.ResponseWriter, r *http.Request) {
	a.subscribe(w, r, LevelDevice, r.PathValue("id"), "")
}

func (a *API) getDevicesSubscription(w http.ResponseWriter, r *http.Request) {
	a.getSubscription(w, r, LevelDevices, "", r.PathValue("subId"))
}

func (a *API) deleteDevicesSubscription(w http.ResponseWriter, r *http.Request) {
	a.deleteSubscription(w, r, LevelDevices, "", r.PathValue("subId"))
}

func (a *API) getDeviceSubscription(w http.ResponseWriter, r *http.Request) {
	a.getSubscription(w, r, LevelDevice, "", r.PathValue("subId"))
}

func (a *API) deleteDeviceSubscription(w http.ResponseWriter, r *http.Request) {
	a.deleteSubscription(w, r, LevelDevice, "", r.PathValue("subId"))
}

func (a *API) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	if !a.webhooksReady(w) {
		return
	}
	subs := a.webhooks.List(callerOf(r))
	out := make([]subscriptionView, 0, len(subs))
	for _, s := range subs {
		out = append(out, viewOf(s))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (a *API) webhooksReady(w http.ResponseWriter) bool {
	if a.webhooks == nil {
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "subscriptions are not configured on this server")
		return false
	}
	return true
}

func correlationID(r *http.Request) string {
	if c := r.Header.Get(webhook.HeaderCorrelationID); c != "" && len(c) <= 128 {
		return c
	}
	return httpx.RequestID(r.Context())
}

func (a *API) subscribe(w http.ResponseWriter, r *http.Request, level Level, di, href string) {
	if !a.webhooksReady(w) {
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "" && ct != "application/json" {
		httpx.WriteProblem(w, http.StatusUnsupportedMediaType, "send the subscription as application/json")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		httpx.WriteProblem(w, http.StatusRequestEntityTooLarge, "the body is larger than 64 KiB")
		return
	}
	var req subscribeRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		httpx.WriteProblem(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	types, problem := validateSubscribe(&req, level)
	if problem == "" {
		if err := a.webhooks.ValidateURL(r.Context(), req.EventsURL); err != nil {
			problem = "eventsUrl: " + err.Error()
		}
	}
	if problem != "" {
		httpx.WriteProblem(w, http.StatusBadRequest, problem)
		return
	}
	caller := callerOf(r)
	if level != LevelDevices {
		// Only for devices the caller may read.
		d, err := a.registry.Get(r.Context(), registryapi.GetRequest{Caller: caller, DeviceID: di})
		if err != nil {
			a.registryError(w, err)
			return
		}
		if level == LevelResource && !slices.ContainsFunc(d.Links, func(l ocf.Link) bool { return l.Href == href }) {
			httpx.WriteProblem(w, http.StatusNotFound, "the device has not published "+href)
			return
		}
	}
	sub := &Subscription{
		ID: newSubscriptionID(), Owner: caller.UserID, Admin: caller.Admin,
		Level: level, DeviceID: di, Href: href, EventTypes: types, EventsURL: req.EventsURL,
		CreatedAt: a.cfg.Now().UTC(), CorrelationID: correlationID(r),
	}
	if err := a.webhooks.Create(r.Context(), sub, req.SigningSecret); err != nil {
		if errors.Is(err, registryapi.ErrNotFound) || errors.Is(err, registryapi.ErrUnavailable) {
			a.registryError(w, err)
			return
		}
		a.log.Warn("subscribe failed", "err", err, "request_id", httpx.RequestID(r.Context()))
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the subscription could not be stored")
		return
	}
	a.log.Info("subscription created", "subscription_id", sub.ID, "user_id", sub.Owner, "level", level, "device_id", di, "request_id", httpx.RequestID(r.Context()))
	w.Header().Set("Location", strings.TrimSuffix(r.URL.Path, "/")+"/"+sub.ID)
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{"subscriptionId": sub.ID})
}

// validateSubscribe checks the body and returns the event types without
// repeats, or a problem that names the field.
func validateSubscribe(req *subscribeRequest, level Level) ([]string, string) {
	allowed := levelEventTypes[level]
	switch {
	case strings.TrimSpace(req.EventsURL) == "":
		return nil, "eventsUrl: required"
	case len(req.EventTypes) == 0:
		return nil, "eventTypes: required, one or more of " + strings.Join(allowed, ", ")
	case len([]rune(req.SigningSecret)) != webhook.SecretLength:
		return nil, fmt.Sprintf("signingSecret: must be exactly %d characters", webhook.SecretLength)
	}
	var types []string
	for _, t := range req.EventTypes {
		if !slices.Contains(allowed, t) {
			return nil, fmt.Sprintf("eventTypes: %q is not one of %s", t, strings.Join(allowed, ", "))
		}
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	return types, ""
}

// subscriptionView is a subscription as the API shows it; never the secret.
type subscriptionView struct {
	ID         string    `json:"subscriptionId"`
	Level      Level     `json:"level"`
	DeviceID   string    `json:"deviceId,omitempty"`
	Href       string    `json:"href,omitempty"`
	EventsURL  string    `json:"eventsUrl"`
	EventTypes []string  `json:"eventTypes"`
	CreatedAt  time.Time `json:"createdAt"`
}

func viewOf(s *Subscription) subscriptionView {
	v := subscriptionView{ID: s.ID, Level: s.Level, DeviceID: s.DeviceID, EventsURL: s.EventsURL, EventTypes: s.EventTypes, CreatedAt: s.CreatedAt}
	if s.Href != "" {
		v.Href = "/" + s.DeviceID + s.Href
	}
	return v
}

// lookup finds a subscription that belongs to the caller and to the path.
func (a *API) lookup(w http.ResponseWriter, r *http.Request, level Level, href, subID string) *Subscription {
	if !a.webhooksReady(w) {
		return nil
	}
	sub, err := a.webhooks.Get(subID, callerOf(r))
	if err == nil && (sub.Level != level || level != LevelDevices && sub.DeviceID != r.PathValue("id") || level == LevelResource && sub.Href != href) {
		err = ErrSubscriptionNotFound
	}
	if err != nil {
		httpx.WriteProblem(w, http.StatusNotFound, "no subscription "+subID+" here")
		return nil
	}
	return sub
}

func (a *API) getSubscription(w http.ResponseWriter, r *http.Request, level Level, href, subID string) {
	if sub := a.lookup(w, r, level, href, subID); sub != nil {
		httpx.WriteJSON(w, http.StatusOK, viewOf(sub))
	}
}

func (a *API) deleteSubscription(w http.ResponseWriter, r *http.Request, level Level, href, subID string) {
	sub := a.lookup(w, r, level, href, subID)
	if sub == nil {
		return
	}
	if err := a.webhooks.Delete(r.Context(), sub.ID, callerOf(r), correlationID(r)); err != nil {
		if errors.Is(err, ErrSubscriptionNotFound) {
			httpx.WriteProblem(w, http.StatusNotFound, "no subscription "+subID+" here")
			return
		}
		a.log.Warn("unsubscribe failed", "subscription_id", sub.ID, "err", err)
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the subscription could not be cancelled now")
		return
	}
	a.log.Info("subscription cancelled", "subscription_id", sub.ID, "user_id", sub.Owner, "request_id", httpx.RequestID(r.Context()))
	w.WriteHeader(http.StatusAccepted)
}

func sortSubscriptions(s []*Subscription) {
	sort.Slice(s, func(i, j int) bool {
		if !s[i].CreatedAt.Equal(s[j].CreatedAt) {
			return s[i].CreatedAt.Before(s[j].CreatedAt)
		}
		return s[i].ID < s[j].ID
	})
}

// newSubscriptionID returns a random (version 4) UUID.
func newSubscriptionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
