package c2capi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

const (
	contentTypeOCFCBOR = "application/vnd.ocf+cbor"
	// maxRequestBody bounds resource updates.
	maxRequestBody = 256 << 10
)

func resourceHref(r *http.Request) string {
	v := r.PathValue("href")
	// The path ends in "/" + href, where ServeMux matched it: a slice of it
	// is the same string without a new one for every request.
	if p := r.URL.Path; len(p) > len(v) && p[len(p)-len(v)-1] == '/' && p[len(p)-len(v):] == v {
		return p[len(p)-len(v)-1:]
	}
	return "/" + v
}

// Header keys in canonical form and constant values, assigned to the header
// map directly: Header.Set would canonicalise "ETag" and "OCF-Status" into
// new strings and allocate a value slice on every request. The value slices
// are shared and have capacity 1, so an Add appends to a copy.
const (
	keyETag         = "Etag"
	keyLastModified = "Last-Modified"
	// keyOCFStatus (OCF-Status) carries the device's CoAP status with every
	// resource answer.
	keyOCFStatus   = "Ocf-Status"
	keyContentType = "Content-Type"
)

var (
	valueJSON    = []string{"application/json"}
	valueOCFCBOR = []string{contentTypeOCFCBOR}
	// statusValues are the OCF-Status values of the success codes.
	statusValues = map[string][]string{"2.01": {"2.01"}, "2.02": {"2.02"}, "2.03": {"2.03"}, "2.04": {"2.04"}, "2.05": {"2.05"}}
	status205    = statusValues["2.05"]
)

// ocfStatusValue is the OCF-Status header value of a CoAP code.
func ocfStatusValue(code string) []string {
	if v, ok := statusValues[code]; ok {
		return v
	}
	return []string{code}
}

// getResource answers the twin content, or asks the device with ?twin=false.
func (a *API) getResource(w http.ResponseWriter, r *http.Request) {
	// Parsing the query costs a map; most reads have none.
	if r.URL.RawQuery != "" {
		switch r.URL.Query().Get("twin") {
		case "", "true":
		case "false":
			a.command(w, r, commands.MethodGet, nil)
			return
		default:
			httpx.WriteProblem(w, http.StatusBadRequest, "twin must be true or false")
			return
		}
	}
	res, err := a.resource(r.Context(), registryapi.ResourceRequest{Caller: callerOf(r), DeviceID: r.PathValue("id"), Href: resourceHref(r)})
	if err != nil {
		a.registryError(w, err)
		return
	}
	rep := a.represent(r, res.ContentType, res.Content)
	var th *twinHeaders
	if rep.entry != nil {
		th = rep.entry.headers(res.Sequence, res.Time)
	} else {
		th = newTwinHeaders(res.Sequence, res.Time)
	}
	h := w.Header()
	h[keyETag] = th.etagValue
	h[keyLastModified] = th.lastModified
	h[keyOCFStatus] = status205
	if inm := r.Header.Get("If-None-Match"); inm != "" && (inm == th.etag || inm == "*") {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	rep.write(w, http.StatusOK)
}

func (a *API) updateResource(w http.ResponseWriter, r *http.Request) {
	a.commandWithBody(w, r, commands.MethodPost)
}

func (a *API) createResource(w http.ResponseWriter, r *http.Request) {
	a.commandWithBody(w, r, commands.MethodPut)
}

func (a *API) deleteResource(w http.ResponseWriter, r *http.Request) {
	a.command(w, r, commands.MethodDelete, nil)
}

func (a *API) commandWithBody(w http.ResponseWriter, r *http.Request, method string) {
	ct := r.Header.Get("Content-Type")
	if ct != "application/json" && ct != contentTypeOCFCBOR { // the usual ones need no parsing
		ct, _, _ = mime.ParseMediaType(ct)
	}
	if ct == "" {
		ct = "application/json"
	}
	if ct != "application/json" && ct != contentTypeOCFCBOR && ct != "application/cbor" {
		httpx.WriteProblem(w, http.StatusUnsupportedMediaType, "send application/json or application/vnd.ocf+cbor")
		return
	}
	// net/http already stops a body at its Content-Length.
	var src io.Reader = r.Body
	if r.ContentLength < 0 || r.ContentLength > maxRequestBody {
		src = http.MaxBytesReader(w, r.Body, maxRequestBody)
	}
	var content []byte
	if ct == "application/json" {
		// A JSON body is converted into a new slice, so it is read into a
		// pooled buffer rather than a new one each time.
		buf := bodyBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, readErr := buf.ReadFrom(src)
		var convErr error
		if readErr == nil {
			// Convert here so a malformed body is the client's 400, not the
			// device's. The CBOR shares nothing with buf.
			content, convErr = ocf.JSONToCBOR(buf.Bytes())
		}
		putBodyBuf(buf)
		switch {
		case readErr != nil:
			httpx.WriteProblem(w, http.StatusRequestEntityTooLarge, "the body is larger than 256 KiB")
			return
		case convErr != nil:
			httpx.WriteProblem(w, http.StatusBadRequest, convErr.Error())
			return
		}
	} else {
		body, err := io.ReadAll(src)
		if err != nil {
			httpx.WriteProblem(w, http.StatusRequestEntityTooLarge, "the body is larger than 256 KiB")
			return
		}
		var v any
		if err := ocf.Unmarshal(body, &v); err != nil {
			httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		content = body
	}
	a.command(w, r, method, content)
}

// bodyBufs holds buffers for JSON request bodies.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putBodyBuf(b *bytes.Buffer) {
	if b.Cap() <= 64<<10 { // do not keep the rare large one
		bodyBufs.Put(b)
	}
}

// command sends a request to the device through the gateway that holds its
// connection and answers with the device's status and content.
func (a *API) command(w http.ResponseWriter, r *http.Request, method string, content []byte) {
	href := resourceHref(r)
	deviceID, published, online, err := a.commandTarget(r, href)
	if err != nil {
		a.registryError(w, err)
		return
	}
	if method != commands.MethodPut && !published {
		httpx.WriteProblem(w, http.StatusNotFound, "the device has not published "+href)
		return
	}
	if !online {
		httpx.WriteProblem(w, http.StatusConflict, "the device is offline")
		return
	}
	req := &commands.Request{Method: method, Href: href, CorrelationID: httpx.RequestID(r.Context())}
	if r.URL.RawQuery != "" { // parsing costs a map; most requests have no query
		if raw := r.URL.Query().Get("if"); raw != "" {
			req.Query = "if=" + raw
		}
	}
	if content != nil {
		req.ContentType, req.Content = events.ContentTypeOCFCBOR, content
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.CommandTimeout)
	defer cancel()
	resp, err := a.commands.Do(ctx, deviceID, req)
	switch {
	case errors.Is(err, commands.ErrTimeout):
		httpx.WriteProblem(w, http.StatusGatewayTimeout, "the device did not answer in time")
		return
	case errors.Is(err, commands.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the message bus is unavailable; retry later")
		return
	case errors.Is(err, commands.ErrNoGateway):
		w.Header().Set("Retry-After", "5")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the device is not connected")
		return
	case err != nil && resp != nil && resp.Error != "":
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, http.StatusServiceUnavailable, "the gateway refused the request: "+resp.Error)
		return
	case err != nil:
		a.log.Warn("command failed", "device_id", deviceID, "href", href, "err", err)
		httpx.WriteProblem(w, http.StatusBadGateway, "the request to the device failed")
		return
	}
	w.Header()[keyOCFStatus] = ocfStatusValue(resp.Code)
	status := httpStatus(resp.Code)
	if status >= 400 {
		detail := "the device answered " + resp.Code
		if strings.HasPrefix(resp.ContentType, "text/plain") && len(resp.Content) > 0 {
			detail += ": " + strings.ToValidUTF8(string(resp.Content[:min(len(resp.Content), 512)]), "")
		}
		httpx.WriteProblem(w, status, detail)
		return
	}
	if len(resp.Content) == 0 {
		w.WriteHeader(status)
		return
	}
	a.represent(r, resp.ContentType, resp.Content).write(w, status)
}

// localRegistry is what a registry in the same process offers besides
// registryapi.Querier, to spare the hot paths allocations: the facts a live
// request needs without the device's whole view, and a twin as a value
// (see registry.Registry).
type localRegistry interface {
	CommandTarget(ctx context.Context, c registryapi.Caller, deviceID, href string) (published, online bool, err error)
	ResourceValue(ctx context.Context, q registryapi.ResourceRequest) (registryapi.Resource, error)
}

// resource reads a twin from the registry.
func (a *API) resource(ctx context.Context, q registryapi.ResourceRequest) (registryapi.Resource, error) {
	if l, ok := a.registry.(localRegistry); ok {
		return l.ResourceValue(ctx, q)
	}
	res, err := a.registry.Resource(ctx, q)
	if err != nil {
		return registryapi.Resource{}, err
	}
	return *res, nil
}

// commandTarget looks up the device of a live request to href: its id,
// whether it published href and whether it is online.
func (a *API) commandTarget(r *http.Request, href string) (deviceID string, published, online bool, err error) {
	deviceID = r.PathValue("id")
	if t, ok := a.registry.(localRegistry); ok {
		published, online, err = t.CommandTarget(r.Context(), callerOf(r), deviceID, href)
		return deviceID, published, online, err
	}
	d, err := a.registry.Get(r.Context(), registryapi.GetRequest{Caller: callerOf(r), DeviceID: deviceID})
	if err != nil {
		return "", false, false, err
	}
	return d.DeviceID, slices.ContainsFunc(d.Links, func(l ocf.Link) bool { return l.Href == href }), d.Online, nil
}

// httpStatus maps a CoAP response code ("2.05") to HTTP.
func httpStatus(code string) int {
	switch code {
	case "2.01":
		return http.StatusCreated
	case "2.02", "2.03", "2.04", "2.05":
		return http.StatusOK
	case "4.00", "4.02":
		return http.StatusBadRequest
	case "4.01", "4.03":
		return http.StatusForbidden
	case "4.04":
		return http.StatusNotFound
	case "4.05":
		return http.StatusMethodNotAllowed
	case "4.06":
		return http.StatusNotAcceptable
	case "4.13":
		return http.StatusRequestEntityTooLarge
	case "4.15":
		return http.StatusUnsupportedMediaType
	}
	if strings.HasPrefix(code, "2.") {
		return http.StatusOK
	}
	return http.StatusBadGateway
}

// toJSON converts a representation to JSON.
func toJSON(contentType string, content []byte) (json.RawMessage, error) {
	if contentType == events.ContentTypeJSON {
		return content, nil
	}
	return ocf.CBORToJSON(content)
}

// representation is content in the format the client accepts, or the
// reason it could not be converted.
type representation struct {
	body        []byte
	contentType []string
	entry       *reprEntry // the cached conversion, when there is one
	problem     string     // set when the content could not be converted
}

// represent converts content to the format the client accepts: JSON unless
// it asks for OCF CBOR. CBOR is converted to JSON through a.reprs.
func (a *API) represent(r *http.Request, contentType string, content []byte) representation {
	wantCBOR := strings.Contains(r.Header.Get("Accept"), contentTypeOCFCBOR)
	switch {
	case wantCBOR && contentType == events.ContentTypeOCFCBOR:
		return representation{body: content, contentType: valueOCFCBOR}
	case wantCBOR:
		c, err := ocf.JSONToCBOR(content)
		if err != nil {
			return representation{problem: "the device sent content that cannot be converted"}
		}
		return representation{body: c, contentType: valueOCFCBOR}
	case contentType == events.ContentTypeJSON:
		return representation{body: content, contentType: valueJSON}
	default:
		e, err := a.reprs.get(content, ocf.CBORToJSON)
		if err != nil {
			return representation{problem: "the device sent content that is not valid CBOR"}
		}
		return representation{body: e.json, contentType: valueJSON, entry: e}
	}
}

// write answers the representation with status, or 502 when the content
// could not be converted.
func (rep representation) write(w http.ResponseWriter, status int) {
	if rep.problem != "" {
		httpx.WriteProblem(w, http.StatusBadGateway, rep.problem)
		return
	}
	w.Header()[keyContentType] = rep.contentType
	w.WriteHeader(status)
	_, _ = w.Write(rep.body)
}
