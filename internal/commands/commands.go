package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Methods a command can carry.
const (
	MethodGet    = "GET"
	MethodPost   = "POST"
	MethodPut    = "PUT"
	MethodDelete = "DELETE"
	// MethodSignOff is not sent to the device: the gateway ends every
	// session of the device it holds (no more commands, observations or
	// events) and closes the connections, answering "2.02". The sender has
	// already published device_unregistered.
	MethodSignOff = "SIGNOFF"
)

// Subject is where the gateway holding deviceID's connection listens.
func Subject(deviceID string) string { return "ocfcloud.device." + deviceID + ".cmd" }

// Request asks a device to handle one CoAP request.
type Request struct {
	Method        string `json:"method"`
	Href          string `json:"href"`
	Query         string `json:"query,omitempty"` // e.g. "if=oic.if.baseline"
	ContentType   string `json:"contentType,omitempty"`
	Content       []byte `json:"content,omitempty"`
	CorrelationID string `json:"correlationId,omitempty"`
	// TimeoutMillis bounds the wait for the device's answer; the gateway
	// caps it (default 10 s).
	TimeoutMillis int64 `json:"timeoutMs,omitempty"`
}

// Response is the device's answer, or the gateway's reason for having none.
type Response struct {
	// Code is the CoAP response code as a string, e.g. "2.05", "4.04".
	Code        string `json:"code"`
	ContentType string `json:"contentType,omitempty"`
	Content     []byte `json:"content,omitempty"`
	// Error is set when the device did not answer: ErrCodeTimeout,
	// ErrCodeOffline, ErrCodeBusy or ErrCodeBadRequest. Code then carries
	// the CoAP code the gateway chose (5.04, 5.03, 5.03, 4.00) and Content a
	// text/plain diagnostic.
	Error string `json:"error,omitempty"`
}

// Error codes of a Response without a device answer.
const (
	ErrCodeTimeout    = "device_timeout"
	ErrCodeOffline    = "device_offline"
	ErrCodeBadRequest = "bad_request"
	// ErrCodeBusy means the device already has the maximum number of
	// requests in flight (gateway limit, default 16); retry later.
	ErrCodeBusy = "device_busy"
)

// Sentinel errors of Client.Do.
var (
	// ErrNoGateway means no gateway holds a connection to the device.
	ErrNoGateway = errors.New("device not connected")
	// ErrUnavailable means the message bus is down: nothing was sent, the
	// caller may retry later.
	ErrUnavailable = errors.New("message bus unavailable")
	// ErrTimeout means the device did not answer in time.
	ErrTimeout = errors.New("device did not answer in time")
	// ErrBusy means the device has too many requests in flight.
	ErrBusy = errors.New("device has too many requests in flight")
	// ErrBadRequest means the gateway refused the request before sending it
	// (unknown method, bad href, content it cannot convert).
	ErrBadRequest = errors.New("bad command request")
)

// Client sends commands over NATS.
type Client struct{ nc *nats.Conn }

// NewClient returns a client on nc.
func NewClient(nc *nats.Conn) *Client { return &Client{nc: nc} }

// Do sends req to deviceID and waits for the answer (ctx bounds the wait).
func (c *Client) Do(ctx context.Context, deviceID string, req *Request) (*Response, error) {
	// While NATS is reconnecting a request would sit in the reconnect buffer
	// until it times out; answering at once lets the caller say "retry".
	if !c.nc.IsConnected() {
		return nil, ErrUnavailable
	}
	if req.TimeoutMillis == 0 {
		if dl, ok := ctx.Deadline(); ok {
			req.TimeoutMillis = max(time.Until(dl).Milliseconds()-100, 1)
		}
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	msg, err := c.nc.RequestWithContext(ctx, Subject(deviceID), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, ErrNoGateway
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return nil, ErrTimeout
	case err != nil:
		return nil, fmt.Errorf("command to %s: %w", deviceID, err)
	}
	var resp Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("command answer from %s: %w", deviceID, err)
	}
	switch resp.Error {
	case ErrCodeTimeout:
		return &resp, ErrTimeout
	case ErrCodeOffline:
		return &resp, ErrNoGateway
	case ErrCodeBusy:
		return &resp, ErrBusy
	case ErrCodeBadRequest:
		return &resp, ErrBadRequest
	}
	return &resp, nil
}
