package c2capi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// MaxPageSize caps every list answer.
const MaxPageSize = 100

const contentTypeOCFCBOR = "application/vnd.ocf+cbor"

// Config configures the API.
type Config struct {
	Verifier *auth.Verifier
	NATS     *nats.Conn
	Logger   *slog.Logger
}

// API is the C2C REST API.
type API struct {
	cfg      Config
	log      *slog.Logger
	registry *registryapi.Client
}

// New returns the API.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &API{cfg: cfg, log: cfg.Logger.With("service", "c2c-api"), registry: registryapi.NewClient(cfg.NATS)}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	v := a.cfg.Verifier
	mux.Handle("GET /api/v1/devices", v.Require(http.HandlerFunc(a.listDevices), auth.ScopeReadDeviceInformation))
	mux.Handle("GET /api/v1/devices/{id}", v.Require(http.HandlerFunc(a.getDevice), auth.ScopeReadDeviceInformation))
	mux.Handle("GET /api/v1/devices/{id}/{href...}", v.Require(http.HandlerFunc(a.getResource), auth.ScopeReadResources))
}

// Ready reports whether the API can reach the registry.
func (a *API) Ready() bool { return a.cfg.NATS.IsConnected() }

func callerOf(r *http.Request) registryapi.Caller {
	c := auth.FromContext(r.Context())
	return registryapi.Caller{UserID: c.Subject, Admin: c.IsAdmin()}
}

// Device is a device in the OCF C2C shape.
type Device struct {
	Device DeviceProperties `json:"device"`
	Status string           `json:"status"`
	Links  []ocf.Link       `json:"links"`
}

// DeviceProperties are the device's /oic/d properties.
type DeviceProperties struct {
	RT   []string `json:"rt,omitempty"`
	DI   string   `json:"di"`
	Name string   `json:"n,omitempty"`
}

func toDevice(d registryapi.Device) Device {
	out := Device{
		Device: DeviceProperties{RT: d.Types, DI: d.DeviceID, Name: d.Name},
		Status: "offline",
		Links:  make([]ocf.Link, 0, len(d.Links)),
	}
	if d.Online {
		out.Status = "online"
	}
	for _, l := range d.Links {
		l.Href = "/" + d.DeviceID + l.Href
		out.Links = append(out.Links, l)
	}
	return out
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	top, err := intParam(q, "$top", MaxPageSize)
	if err != nil || top < 0 || top > MaxPageSize {
		httpx.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("$top must be an integer from 0 to %d", MaxPageSize))
		return
	}
	skip, err := intParam(q, "$skip", 0)
	if err != nil || skip < 0 {
		httpx.WriteProblem(w, http.StatusBadRequest, "$skip must be a non-negative integer")
		return
	}
	page, err := a.registry.List(r.Context(), registryapi.ListRequest{Caller: callerOf(r), Skip: skip, Limit: top})
	if err != nil {
		a.registryError(w, err)
		return
	}
	devices := make([]Device, 0, len(page.Devices))
	for _, d := range page.Devices {
		devices = append(devices, toDevice(d))
	}
	next := ""
	if skip+len(devices) < page.Total && top > 0 {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("$skip", strconv.Itoa(skip+len(devices)))
		nq.Set("$top", strconv.Itoa(top))
		next = absoluteURL(r, "/api/v1/devices?"+nq.Encode())
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(page.Total))
	if q.Get("$count") == "true" || q.Get("$inlinecount") == "allpages" {
		env := map[string]any{"value": devices, "TotalCount": page.Total}
		if next != "" {
			env["Next"] = next
		}
		httpx.WriteJSON(w, http.StatusOK, env)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, devices)
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.registry.Get(r.Context(), registryapi.GetRequest{Caller: callerOf(r), DeviceID: r.PathValue("id")})
	if err != nil {
		a.registryError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, toDevice(*d))
}

func (a *API) getResource(w http.ResponseWriter, r *http.Request) {
	href := "/" + r.PathValue("href")
	res, err := a.registry.Resource(r.Context(), registryapi.ResourceRequest{Caller: callerOf(r), DeviceID: r.PathValue("id"), Href: href})
	if err != nil {
		a.registryError(w, err)
		return
	}
	writeContent(w, r, res.ContentType, res.Content)
}

// writeContent answers a resource representation in the format the client
// accepts: JSON unless it asks for OCF CBOR.
func writeContent(w http.ResponseWriter, r *http.Request, contentType string, content []byte) {
	wantCBOR := strings.Contains(r.Header.Get("Accept"), contentTypeOCFCBOR)
	switch {
	case wantCBOR && contentType == events.ContentTypeOCFCBOR:
		w.Header().Set("Content-Type", contentTypeOCFCBOR)
		_, _ = w.Write(content)
	case wantCBOR:
		c, err := ocf.JSONToCBOR(content)
		if err != nil {
			httpx.WriteProblem(w, http.StatusBadGateway, "the device sent content that cannot be converted")
			return
		}
		w.Header().Set("Content-Type", contentTypeOCFCBOR)
		_, _ = w.Write(c)
	default:
		body := content
		if contentType != events.ContentTypeJSON {
			j, err := ocf.CBORToJSON(content)
			if err != nil {
				httpx.WriteProblem(w, http.StatusBadGateway, "the device sent content that is not valid CBOR")
				return
			}
			body = j
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

func (a *API) registryError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, registryapi.ErrNotFound):
		httpx.WriteProblem(w, http.StatusNotFound, strings.TrimPrefix(err.Error(), "not found: "))
	case errors.Is(err, registryapi.ErrBadRequest):
		httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
	default:
		a.log.Warn("registry unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the device registry is unavailable")
	}
}

func intParam(q url.Values, name string, def int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	return strconv.Atoi(v)
}

// absoluteURL builds an absolute URL for path on the host the client used.
func absoluteURL(r *http.Request, path string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + r.Host + path
}
