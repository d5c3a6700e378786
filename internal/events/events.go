package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Type names a device event.
type Type string

// Device event types.
const (
	DeviceRegistered     Type = "device_registered"
	DeviceUnregistered   Type = "device_unregistered"
	DeviceOnline         Type = "device_online"
	DeviceOffline        Type = "device_offline"
	ResourcesPublished   Type = "resources_published"
	ResourcesUnpublished Type = "resources_unpublished"
	ResourceChanged      Type = "resource_changed"
)

// Content types of envelope contents.
const (
	ContentTypeJSON    = "application/json"
	ContentTypeOCFCBOR = "application/vnd.ocf+cbor"
)

// Envelope is every device event. Sequence increases per device across all
// types; consumers apply an event only if it is newer than what they hold for
// the same aspect (device, links, online state, one resource).
type Envelope struct {
	DeviceID      string    `json:"di"`
	Owner         string    `json:"owner"`
	Type          Type      `json:"type"`
	Sequence      uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Href          string    `json:"href,omitempty"`
	Status        int       `json:"status,omitempty"`
	ContentType   string    `json:"contentType,omitempty"`
	Content       []byte    `json:"content,omitempty"`
	CorrelationID string    `json:"correlationId,omitempty"`
}

// MsgID is the JetStream deduplication id of the event.
func (e *Envelope) MsgID() string { return e.DeviceID + ":" + strconv.FormatUint(e.Sequence, 10) }

// Subject is the NATS subject the event is published on.
func (e *Envelope) Subject() string { return Subject(e.Owner, e.DeviceID, e.Type) }

// Validate checks the fields every consumer relies on.
func (e *Envelope) Validate() error {
	switch {
	case e.DeviceID == "" || !validToken(e.DeviceID):
		return fmt.Errorf("event: bad device id %q", e.DeviceID)
	case e.Owner == "" || !validToken(e.Owner):
		return fmt.Errorf("event: bad owner %q", e.Owner)
	case e.Type == "":
		return errors.New("event: no type")
	case e.Sequence == 0:
		return errors.New("event: no sequence")
	}
	return nil
}

// Subject prefixes and names.
const (
	subjectPrefix = "ocfcloud.events"
	// SubjectAll matches every device event.
	SubjectAll = subjectPrefix + ".>"
	// StreamName is the JetStream stream of device events.
	StreamName = "OCFCLOUD_EVENTS"
)

// Subject builds ocfcloud.events.<owner>.<di>.<type>.
func Subject(owner, deviceID string, t Type) string {
	return subjectPrefix + "." + owner + "." + deviceID + "." + string(t)
}

// DeviceSubject matches every event of one device.
func DeviceSubject(owner, deviceID string) string {
	return subjectPrefix + "." + owner + "." + deviceID + ".*"
}

// validToken reports whether s can be one NATS subject token.
func validToken(s string) bool {
	return !strings.ContainsAny(s, ".*> \t\r\n")
}

// Encode marshals the envelope.
func Encode(e *Envelope) ([]byte, error) { return json.Marshal(e) }

// Decode unmarshals and validates an envelope.
func Decode(data []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// StreamOptions size the event stream.
type StreamOptions struct {
	MaxAge   time.Duration // default 7 days
	MaxBytes int64         // default unlimited (-1)
	Replicas int           // default 1; 3 in production clusters
	Memory   bool          // memory storage instead of file (tests)
	// Owner applies these options to an existing stream too. Only the
	// registry owns the stream; every other process uses it as it finds it,
	// so a process with default options cannot shrink a replicated stream.
	Owner bool
}

// ConsumeOptions are the pull settings of the event stream's long-lived
// consumers (the registry's, the webhook fan-out's), plus extra. A pull
// request the server has forgotten (JetStream restarted after a full disk,
// a consumer leader moved) is noticed after two missed heartbeats: 4 s
// here instead of nats.go's 30 s for a durable consumer, during which
// every device's events would wait.
func ConsumeOptions(extra ...jetstream.PullConsumeOpt) []jetstream.PullConsumeOpt {
	return append([]jetstream.PullConsumeOpt{jetstream.PullExpiry(10 * time.Second), jetstream.PullHeartbeat(2 * time.Second)}, extra...)
}

// EnsureStream creates or updates the event stream.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	if o.MaxAge == 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = -1
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	if !o.Owner {
		if s, err := js.Stream(ctx, StreamName); err == nil {
			return s, nil
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("event stream: %w", err)
		}
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       StreamName,
		Subjects:   []string{SubjectAll},
		Storage:    storage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     o.MaxAge,
		MaxBytes:   o.MaxBytes,
		Replicas:   o.Replicas,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("event stream: %w", err)
	}
	return s, nil
}

// Publisher publishes envelopes to JetStream and waits for the stream's ack,
// so a published event is durable.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// Publish stores e durably; a retry of the same event is deduplicated.
func (p *Publisher) Publish(ctx context.Context, e *Envelope) error {
	if err := e.Validate(); err != nil {
		return err
	}
	data, err := Encode(e)
	if err != nil {
		return err
	}
	if _, err := p.js.Publish(ctx, e.Subject(), data, jetstream.WithMsgID(e.MsgID())); err != nil {
		return fmt.Errorf("publish %s %s: %w", e.Type, e.DeviceID, err)
	}
	return nil
}

// Sequencer hands out per-device sequence numbers that keep increasing across
// reconnects and restarts: it starts from the wall clock in nanoseconds and
// never repeats or goes back within the process.
type Sequencer struct {
	mu   sync.Mutex
	last uint64
	now  func() time.Time
}

// NewSequencer returns a sequencer on the clock now (nil: time.Now).
func NewSequencer(now func() time.Time) *Sequencer {
	if now == nil {
		now = time.Now
	}
	return &Sequencer{now: now}
}

// Next returns the next sequence number.
func (s *Sequencer) Next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := uint64(s.now().UnixNano())
	if n <= s.last {
		n = s.last + 1
	}
	s.last = n
	return n
}
