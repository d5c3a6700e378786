package c2capi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/odata"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// Device is a device in the OCF C2C shape.
type Device struct {
	Device DeviceProperties `json:"device"`
	Status string           `json:"status"`
	Links  []Link           `json:"links"`
}

// DeviceProperties are the device's /oic/d properties.
type DeviceProperties struct {
	RT   []string             `json:"rt,omitempty"`
	DI   string               `json:"di"`
	DMN  []ocf.LocalizedValue `json:"dmn,omitempty"`
	Name string               `json:"n,omitempty"`
	// Owner is shown to administrators only.
	Owner string `json:"owner,omitempty"`
}

// Link is an OCF link with a C2C href and, on request, the resource's content.
type Link struct {
	ocf.Link
	Rep json.RawMessage `json:"rep,omitempty"`
}

// selectable are the top-level fields $select may keep; the OData names of
// device fields select the object that holds them.
var selectable = map[string]string{
	"device": "device", "status": "status", "links": "links",
	"di": "device", "name": "device", "types": "device", "owner": "device", "online": "status",
}

var queryOptions = odata.Options{
	FilterFields: registryapi.DeviceFields,
	SelectFields: []string{"device", "status", "links", "di", "name", "types", "owner", "online"},
	ExpandFields: []string{"resources"},
	MaxTop:       MaxPageSize,
}

func toDevice(d registryapi.Device, admin bool) Device {
	out := Device{
		Device: DeviceProperties{RT: d.Types, DI: d.DeviceID, DMN: d.Manufacturer, Name: d.Name},
		Status: "offline",
		Links:  make([]Link, 0, len(d.Links)),
	}
	if admin {
		out.Device.Owner = d.Owner
	}
	if d.Online {
		out.Status = "online"
	}
	for _, l := range d.Links {
		link := Link{Link: l}
		link.Href = "/" + d.DeviceID + l.Href
		if i := slices.IndexFunc(d.Resources, func(r registryapi.Resource) bool { return r.Href == l.Href }); i >= 0 {
			if j, err := toJSON(d.Resources[i].ContentType, d.Resources[i].Content); err == nil {
				link.Rep = j
			}
		}
		out.Links = append(out.Links, link)
	}
	return out
}

// project keeps only the selected top-level fields.
func project(d Device, sel []string) any {
	if len(sel) == 0 {
		return d
	}
	out := map[string]any{}
	for _, s := range sel {
		switch selectable[s] {
		case "device":
			out["device"] = d.Device
		case "status":
			out["status"] = d.Status
		case "links":
			out["links"] = d.Links
		}
	}
	return out
}

// wantsContent reports ?content=all or $expand=resources.
func wantsContent(q url.Values, expand []string) bool {
	return q.Get("content") == "all" || slices.Contains(expand, "resources")
}

func checkContentParam(w http.ResponseWriter, q url.Values) bool {
	if c := q.Get("content"); c != "" && c != "base" && c != "all" {
		httpx.WriteProblem(w, http.StatusBadRequest, "content must be base or all")
		return false
	}
	return true
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !checkContentParam(w, q) {
		return
	}
	opts, err := odata.Parse(q, queryOptions)
	if err != nil {
		httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	top := MaxPageSize
	if opts.Top >= 0 {
		top = opts.Top
	}
	caller := callerOf(r)
	page, err := a.registry.List(r.Context(), registryapi.ListRequest{
		Caller: caller, Filter: q.Get("$filter"), OrderBy: q.Get("$orderby"),
		Skip: opts.Skip, Limit: max(top, 1), WithContent: wantsContent(q, opts.Expand),
	})
	if err != nil {
		a.registryError(w, err)
		return
	}
	if top == 0 { // $top=0 asks only for the count
		page.Devices = nil
	}
	items := make([]any, 0, len(page.Devices))
	for _, d := range page.Devices {
		items = append(items, project(toDevice(d, caller.Admin), opts.Select))
	}
	next := ""
	if end := opts.Skip + len(items); end < page.Total && top > 0 {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("$skip", strconv.Itoa(end))
		nq.Set("$top", strconv.Itoa(top))
		next = absoluteURL(r, "/api/v1/devices?"+nq.Encode())
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(page.Total))
	if opts.Count {
		env := map[string]any{"value": items, "TotalCount": page.Total}
		if next != "" {
			env["Next"] = next
		}
		httpx.WriteJSON(w, http.StatusOK, env)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, items)
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !checkContentParam(w, q) {
		return
	}
	caller := callerOf(r)
	d, err := a.registry.Get(r.Context(), registryapi.GetRequest{Caller: caller, DeviceID: r.PathValue("id"), WithContent: q.Get("content") == "all"})
	if err != nil {
		a.registryError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, toDevice(*d, caller.Admin))
}

// deleteDevice offboards a device: the registry forgets it (device, links,
// twin) and the gateway holding its connection signs it off.
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.registry.Get(r.Context(), registryapi.GetRequest{Caller: callerOf(r), DeviceID: r.PathValue("id")})
	if err != nil {
		a.registryError(w, err)
		return
	}
	e := &events.Envelope{DeviceID: d.DeviceID, Owner: d.Owner, Type: events.DeviceUnregistered, Sequence: a.seq.Next(), Time: a.cfg.Now().UTC(), CorrelationID: httpx.RequestID(r.Context())}
	if err := a.pub.Publish(r.Context(), e); err != nil {
		a.log.Warn("offboard: publish", "device_id", d.DeviceID, "err", err)
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the event store is unavailable")
		return
	}
	// Best effort: a connected device is signed off now; an offline one finds
	// its registration gone when it next signs in.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.cfg.CommandTimeout)
	defer cancel()
	if _, err := a.commands.Do(ctx, d.DeviceID, &commands.Request{Method: commands.MethodSignOff, CorrelationID: httpx.RequestID(r.Context())}); err != nil && !errors.Is(err, commands.ErrNoGateway) {
		a.log.Info("offboard: sign-off not confirmed by the gateway", "device_id", d.DeviceID, "err", err)
	}
	a.log.Info("device offboarded", "device_id", d.DeviceID, "request_id", httpx.RequestID(r.Context()))
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) registryError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, registryapi.ErrNotFound):
		httpx.WriteProblem(w, http.StatusNotFound, strings.TrimPrefix(err.Error(), "not found: "))
	case errors.Is(err, registryapi.ErrBadRequest):
		httpx.WriteProblem(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "bad request: "))
	default:
		a.log.Warn("registry unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the device registry is unavailable")
	}
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
