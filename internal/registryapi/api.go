package registryapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// Service name and endpoint subjects.
const (
	ServiceName     = "ocfcloud-registry"
	SubjectPrefix   = "ocfcloud.registry"
	SubjectList     = SubjectPrefix + ".devices.list"
	SubjectGet      = SubjectPrefix + ".devices.get"
	SubjectResource = SubjectPrefix + ".resource.get"
)

// Error codes carried in the micro error header.
const (
	CodeNotFound   = "404"
	CodeBadRequest = "400"
	CodeInternal   = "500"
)

// Sentinel errors that callers branch on.
var (
	ErrNotFound    = errors.New("not found")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("registry unavailable")
)

// Caller says on whose behalf a query runs: a user sees only the devices they
// own, an admin sees all.
type Caller struct {
	UserID string `json:"userId"`
	Admin  bool   `json:"admin,omitempty"`
}

// Device is the registry's view of one device.
type Device struct {
	DeviceID string   `json:"di"`
	Owner    string   `json:"owner"`
	Name     string   `json:"name,omitempty"`
	Types    []string `json:"types,omitempty"`
	// Manufacturer is /oic/d's dmn, or /oic/p's mnmn when the device gives no dmn.
	Manufacturer []ocf.LocalizedValue `json:"manufacturer,omitempty"`
	Online       bool                 `json:"online"`
	OnlineSince  time.Time            `json:"onlineSince,omitzero"`
	RegisteredAt time.Time            `json:"registeredAt,omitzero"`
	Links        []ocf.Link           `json:"links"`
	// Resources holds the twin content of each resource when asked for.
	Resources []Resource `json:"resources,omitempty"`
}

// DeviceFields are the names a list filter or order may use: di, name,
// types (a collection: "types eq 'x'" matches when any type equals x), online
// and owner.
var DeviceFields = []string{"di", "name", "types", "online", "owner"}

// ListRequest asks for a page of devices.
type ListRequest struct {
	Caller Caller `json:"caller"`
	// Filter and OrderBy are OData $filter and $orderby over DeviceFields.
	Filter  string `json:"filter,omitempty"`
	OrderBy string `json:"orderBy,omitempty"`
	Skip    int    `json:"skip,omitempty"`
	Limit   int    `json:"limit,omitempty"` // 0 means all
	// WithContent adds each published resource's twin content.
	WithContent bool `json:"withContent,omitempty"`
}

// ListResponse is one page and the total count.
type ListResponse struct {
	Devices []Device `json:"devices"`
	Total   int      `json:"total"`
}

// GetRequest asks for one device.
type GetRequest struct {
	Caller      Caller `json:"caller"`
	DeviceID    string `json:"di"`
	WithContent bool   `json:"withContent,omitempty"`
}

// ResourceRequest asks for the twin content of one resource.
type ResourceRequest struct {
	Caller   Caller `json:"caller"`
	DeviceID string `json:"di"`
	Href     string `json:"href"`
}

// Resource is the last known content of a resource.
type Resource struct {
	DeviceID    string    `json:"di"`
	Href        string    `json:"href"`
	Sequence    uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	Status      int       `json:"status,omitempty"`
	ContentType string    `json:"contentType"`
	Content     []byte    `json:"content"`
}

// Querier answers registry queries. Client does it over NATS; a registry in
// the same process implements it directly.
type Querier interface {
	List(ctx context.Context, req ListRequest) (*ListResponse, error)
	Get(ctx context.Context, req GetRequest) (*Device, error)
	Resource(ctx context.Context, req ResourceRequest) (*Resource, error)
}

var _ Querier = (*Client)(nil)

// Client queries the registry over NATS.
type Client struct {
	nc *nats.Conn
}

// NewClient returns a client on nc.
func NewClient(nc *nats.Conn) *Client { return &Client{nc: nc} }

// List returns a page of the caller's devices.
func (c *Client) List(ctx context.Context, req ListRequest) (*ListResponse, error) {
	var out ListResponse
	return &out, c.call(ctx, SubjectList, req, &out)
}

// Get returns one device the caller may see.
func (c *Client) Get(ctx context.Context, req GetRequest) (*Device, error) {
	var out Device
	return &out, c.call(ctx, SubjectGet, req, &out)
}

// Resource returns the twin content of a resource of a device the caller may see.
func (c *Client) Resource(ctx context.Context, req ResourceRequest) (*Resource, error) {
	var out Resource
	return &out, c.call(ctx, SubjectResource, req, &out)
}

func (c *Client) call(ctx context.Context, subject string, req, out any) error {
	if !c.nc.IsConnected() {
		return fmt.Errorf("%w: %s: not connected to NATS", ErrUnavailable, subject)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		desc := msg.Header.Get(micro.ErrorHeader)
		switch code {
		case CodeNotFound:
			return fmt.Errorf("%w: %s", ErrNotFound, desc)
		case CodeBadRequest:
			return fmt.Errorf("%w: %s", ErrBadRequest, desc)
		default:
			return fmt.Errorf("registry error %s: %s", code, desc)
		}
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("registry answer: %w", err)
	}
	return nil
}
