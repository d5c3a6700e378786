package c2capi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
	"github.com/ocfcloud/ocfcloud/internal/webhook"
)

// WebhookConfig configures subscriptions and webhook delivery.
type WebhookConfig struct {
	// SecretsKey (32 bytes) encrypts signing secrets in the database. It
	// must not be stored in the database; the all-in-one server keeps it in
	// <data-dir>/secrets.key, a cluster passes it from a Secret.
	SecretsKey []byte
	// SecretsKeyFile, when SecretsKey is empty, is a file holding the key
	// (64 hex characters or base64), e.g. a mounted Kubernetes Secret.
	SecretsKeyFile string
	// RetryPeriod is how long a delivery is retried before it is dropped
	// with an audit log line; default 24 h.
	RetryPeriod time.Duration
	// RetryBase and RetryMax shape the exponential backoff (with jitter)
	// between attempts; defaults 1 s and 5 min.
	RetryBase, RetryMax time.Duration
	// Timeout bounds one attempt; default 10 s.
	Timeout time.Duration
	// MaxResponseBody is how much of an answer is read; default 64 KiB.
	MaxResponseBody int64
	// AllowCIDRs are reachable even when denied; DenyCIDRs add to the
	// default deny list (link-local and metadata addresses); DenyPrivate
	// also denies loopback and private ranges.
	AllowCIDRs, DenyCIDRs []string
	DenyPrivate           bool
	// StreamReplicas of the delivery stream; default 1 (3 in clusters).
	StreamReplicas int
	// FanoutLease is how long the fan-out lease lasts unless renewed: a
	// process that dies holding it is replaced after at most this long;
	// default 6 s.
	FanoutLease time.Duration
}

func (c *WebhookConfig) setDefaults() {
	if c.RetryPeriod <= 0 {
		c.RetryPeriod = 24 * time.Hour
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.StreamReplicas <= 0 {
		c.StreamReplicas = 1
	}
	if c.FanoutLease <= 0 {
		c.FanoutLease = 6 * time.Second
	}
}

// Delivery stream, subjects, KV bucket and headers.
const (
	WebhookStreamName  = "OCFCLOUD_WEBHOOKS"
	webhookSubjectBase = "ocfcloud.webhooks"
	webhookControl     = "ocfcloud.webhookctl" // replica broadcast, not stored
	seqBucket          = "OCFCLOUD_WEBHOOK_SEQ"

	hdrEventType   = "Ocfcloud-Event-Type"
	hdrSeq         = "Ocfcloud-Seq"
	hdrEventTime   = "Ocfcloud-Event-Time"
	hdrCorrelation = "Ocfcloud-Correlation-Id"
	hdrSource      = "Ocfcloud-Source-Seq"
	fanoutPosKey   = "_fanout"

	eventSubscriptionCancelled = "subscription_cancelled"
	cancelGone                 = "gone" // the endpoint answered 410
	cancelDevice               = "device_unregistered"
	cancelUser                 = "deleted"
)

func webhookSubject(subID string) string  { return webhookSubjectBase + "." + subID }
func webhookConsumer(subID string) string { return "wh-" + subID }

// Dispatcher turns device events into webhook deliveries. A fan-out
// consumer on the event stream appends one delivery per matching
// subscription to the delivery stream, numbered per subscription; one
// durable consumer per subscription (one message in flight) posts them in
// order and retries with backoff, so a slow endpoint only holds its own.
type Dispatcher struct {
	cfg      WebhookConfig
	log      *slog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	seqKV    jetstream.KeyValue
	store    *subscriptionStore
	registry registryapi.Querier
	client   *webhook.Client
	policy   *webhook.Policy
	now      func() time.Time

	mu   sync.Mutex // subs and their sequence counters
	subs map[string]*subState

	evStream   jetstream.Stream
	leaderKV   jetstream.KeyValue
	instance   string
	leaderDone chan struct{}
	fanout     jetstream.ConsumeContext
	inbox      chan jetstream.Msg
	// pos is the stream sequence of the last event the fan-out handled.
	pos uint64
	// pending are the fan-out's appends not yet confirmed (under mu).
	pending []pendingAppend
	flushed time.Time // last flushSeqLocked

	fanDone chan struct{}
	leading atomic.Bool
	// leaseAt is when the fan-out lease was last taken or renewed (unix
	// nanoseconds), 0 while this process does not hold it.
	leaseAt   atomic.Int64
	ctl       *nats.Subscription
	closeOnce sync.Once
	closing   chan struct{}
}

type subState struct {
	sub *Subscription
	// last is the last sequence number given out; -1 none yet, unknown
	// (-2) until recovered from the delivery stream.
	last int64
	// source is the event-stream sequence of the last event appended (or
	// the fan-out position when the subscription started): a replayed
	// event at or below it is already queued.
	source uint64
	dirty  bool
	cc     jetstream.ConsumeContext
	gone   bool // torn down
}

const seqUnknown = -2

type pendingAppend struct {
	st *subState
	f  jetstream.PubAckFuture
}

// DispatcherConfig wires a Dispatcher.
type DispatcherConfig struct {
	NATS     *nats.Conn
	DB       *mongo.Database
	Registry registryapi.Querier
	Logger   *slog.Logger
	Webhooks WebhookConfig
	Now      func() time.Time
}

// NewDispatcher loads every subscription, resumes their deliveries and
// starts the fan-out.
func NewDispatcher(ctx context.Context, cfg DispatcherConfig) (*Dispatcher, error) {
	wc := cfg.Webhooks
	wc.setDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = registryapi.NewClient(cfg.NATS)
	}
	box, err := newSecretBox(wc.SecretsKey)
	if err != nil {
		return nil, err
	}
	policy, err := webhook.NewPolicy(wc.AllowCIDRs, wc.DenyCIDRs, wc.DenyPrivate)
	if err != nil {
		return nil, err
	}
	// An append whose answer is lost fails after 5 s and is retried.
	js, err := jetstream.New(cfg.NATS, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg: wc, log: cfg.Logger.With("service", "webhooks"), nc: cfg.NATS, js: js,
		store:    &subscriptionStore{c: cfg.DB.Collection(subscriptionCollection), box: box},
		registry: cfg.Registry, policy: policy, now: cfg.Now,
		client: webhook.NewClient(webhook.ClientOptions{Policy: policy, Timeout: wc.Timeout, MaxResponseBody: wc.MaxResponseBody}),
		subs:   map[string]*subState{}, closing: make(chan struct{}), instance: newSubscriptionID(),
	}
	// Deliveries are kept (limits retention) for the retry period and an
	// hour more: the last message of a subscription's subject tells a
	// restarted fan-out where its numbering stands.
	// A replicated stream on a cluster that has just formed can take longer
	// than one API call's timeout to create.
	if err := platform.Retry(ctx, time.Minute, func(ctx context.Context) (err error) {
		d.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: WebhookStreamName, Subjects: []string{webhookSubjectBase + ".>"},
			Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
			MaxAge: wc.RetryPeriod + time.Hour, Replicas: wc.StreamReplicas, Duplicates: 2 * time.Minute,
		})
		return err
	}); err != nil {
		return nil, fmt.Errorf("webhook stream: %w", err)
	}
	if err := platform.Retry(ctx, time.Minute, func(ctx context.Context) (err error) {
		d.seqKV, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: seqBucket, Storage: jetstream.FileStorage, Replicas: wc.StreamReplicas, History: 1,
		})
		return err
	}); err != nil {
		return nil, fmt.Errorf("webhook sequence bucket: %w", err)
	}
	// Replicas tell each other about subscriptions they add or remove.
	if d.ctl, err = cfg.NATS.Subscribe(webhookControl, d.handleControl); err != nil {
		return nil, err
	}
	subs, err := d.store.all(ctx)
	if err != nil {
		d.Close()
		return nil, err
	}
	for _, sub := range subs {
		st := &subState{sub: sub, last: seqUnknown}
		d.subs[sub.ID] = st
		if err := d.ensureConsumer(ctx, sub.ID); err != nil {
			d.Close()
			return nil, err
		}
		if err := d.startDeliverer(st); err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := platform.Retry(ctx, time.Minute, func(ctx context.Context) (err error) {
		d.evStream, err = events.EnsureStream(ctx, js, events.StreamOptions{})
		return err
	}); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.startLeading(ctx); err != nil {
		d.Close()
		return nil, err
	}
	d.log.Info("webhook dispatcher started", "subscriptions", len(subs))
	return d, nil
}

func (d *Dispatcher) consumeError(_ jetstream.ConsumeContext, err error) {
	if !errors.Is(err, jetstream.ErrNoHeartbeat) && !errors.Is(err, nats.ErrConnectionClosed) {
		d.log.Debug("webhook consumer", "err", err)
	}
}

// Close stops fan-out and deliveries; what is not delivered stays in the
// delivery stream for the next start. It may be called more than once.
func (d *Dispatcher) Close() {
	d.closeOnce.Do(func() {
		close(d.closing)
		if d.ctl != nil {
			_ = d.ctl.Unsubscribe()
		}
		if d.leaderDone != nil {
			<-d.leaderDone // stops the fan-out and gives up the lease
		}
		d.mu.Lock()
		var ccs []jetstream.ConsumeContext
		for _, st := range d.subs {
			if st.cc != nil {
				ccs = append(ccs, st.cc)
			}
		}
		d.mu.Unlock()
		for _, cc := range ccs {
			cc.Stop()
		}
		for _, cc := range ccs {
			select {
			case <-cc.Closed():
			case <-time.After(d.cfg.Timeout + time.Second):
			}
		}
		d.client.CloseIdle()
	})
}

func (d *Dispatcher) ensureConsumer(ctx context.Context, id string) error {
	_, err := d.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: webhookConsumer(id), FilterSubject: webhookSubject(id),
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 1, // per-subscription order
		AckWait:       d.ackWait(), MaxDeliver: -1,
	})
	if err != nil {
		return fmt.Errorf("webhook consumer %s: %w", id, err)
	}
	return nil
}

// ackWait covers one attempt; a delivery whose ack was lost (a NATS
// restart) is sent again after it.
func (d *Dispatcher) ackWait() time.Duration { return 2*d.cfg.Timeout + time.Second }

// --- fan-out ---

const fanoutBatch = 256

// loadPosition returns the saved fan-out position; on the very first start
// it is the end of the event stream (history is not replayed to webhooks).
func (d *Dispatcher) loadPosition(ctx context.Context, evStream jetstream.Stream) (uint64, error) {
	e, err := d.seqKV.Get(ctx, fanoutPosKey)
	if err == nil {
		return strconv.ParseUint(string(e.Value()), 10, 64)
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("webhook fan-out position: %w", err)
	}
	info, err := evStream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("webhook fan-out position: %w", err)
	}
	if _, err := d.seqKV.Put(ctx, fanoutPosKey, []byte(strconv.FormatUint(info.State.LastSeq, 10))); err != nil {
		return 0, fmt.Errorf("webhook fan-out position: %w", err)
	}
	return info.State.LastSeq, nil
}

// fanoutLoop hands the fan-out's events to handle in batches of up to
// fanoutBatch. Once handle gives a batch up (the process is closing or has
// lost the lease), the rest of the inbox is only drained: handling a later
// event would skip the given-up ones for good, and could number it after
// counters recovered while the given-up appends were still on their way,
// reusing their numbers. The next fan-out, here or in another process,
// replays from the saved position.
func fanoutLoop(inbox <-chan jetstream.Msg, done chan<- struct{}, handle func([]jetstream.Msg) bool) {
	defer close(done)
	givenUp := false
	for m := range inbox {
		if givenUp {
			continue
		}
		batch := []jetstream.Msg{m}
	more:
		for len(batch) < fanoutBatch {
			select {
			case m2, ok := <-inbox:
				if !ok {
					break more
				}
				batch = append(batch, m2)
			default:
				break more
			}
		}
		givenUp = !handle(batch)
	}
}

// fanoutBatch appends the deliveries of a batch of events in order, then
// saves the counters and the position. A failed append (JetStream down) is
// retried until it succeeds: skipping it would lose or reorder events. It
// reports false when it gave the batch up because the process is closing
// or lost the lease.
func (d *Dispatcher) fanoutBatch(batch []jetstream.Msg) bool {
	for len(batch) > 0 {
		// Never number deliveries on a lease that may have passed to
		// another process (this one was paused, or its renewals are late):
		// two processes would give different events the same sequence
		// number. Wait for the next renewal; when the lease is lost, leave
		// the batch to the successor, which replays from the saved position.
		for !d.leaseFresh() {
			if d.leaseAt.Load() == 0 {
				return false
			}
			select {
			case <-d.closing:
				return false
			case <-time.After(20 * time.Millisecond):
			}
		}
		done, err := d.fanoutSome(batch)
		batch = batch[done:]
		if err == nil {
			continue
		}
		if errors.Is(err, errClosing) {
			return false
		}
		d.log.Warn("webhook fan-out: append failed; retrying", "err", err)
		select {
		case <-d.closing:
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
	return true
}

// fanoutSome handles events until one fails and reports how many it
// finished, counters and position saved.
func (d *Dispatcher) fanoutSome(batch []jetstream.Msg) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cancels []cancellation
	var failure error
	done := 0
	d.mu.Lock()
	posBefore := d.pos
	for _, m := range batch {
		meta, err := m.Metadata()
		if err != nil {
			done++
			continue
		}
		if meta.Sequence.Stream <= d.pos {
			done++ // replayed by a recreated ordered consumer
			continue
		}
		if e, err := events.Decode(m.Data()); err != nil {
			d.log.Warn("webhook fan-out: undecodable event skipped", "seq", meta.Sequence.Stream, "err", err)
		} else if err := d.fanoutEvent(ctx, e, meta.Sequence.Stream, &cancels); err != nil {
			failure = err
			break
		}
		d.pos = meta.Sequence.Stream
		done++
		if len(d.pending) >= 2048 {
			if failure = d.awaitAppendsLocked(ctx); failure != nil {
				break
			}
		}
	}
	if err := d.awaitAppendsLocked(ctx); err != nil && failure == nil {
		failure = err
	}
	if failure != nil {
		// Start the batch again: what was stored is recognised by its
		// source sequence and skipped.
		d.pos, done = posBefore, 0
	} else if time.Since(d.flushed) >= time.Second {
		// Saving is for a restart: counters are recovered from the stream
		// and a replay from an older position is skipped, so once a
		// second is enough and keeps round trips off the hot path.
		if err := d.flushSeqLocked(ctx); err != nil {
			d.log.Warn("webhook fan-out: saving counters", "err", err)
		}
	}
	d.mu.Unlock()
	for _, c := range cancels {
		if err := d.store.markCancelled(ctx, c.id, c.reason); err != nil {
			d.log.Warn("webhook fan-out: cancel", "subscription_id", c.id, "err", err)
		}
		d.broadcast("cancel", c.id)
	}
	return done, failure
}

// ocfEventType maps a device event to the OCF C2C event type.
func ocfEventType(t events.Type) string {
	switch t {
	case events.DeviceRegistered:
		return "devices_registered"
	case events.DeviceUnregistered:
		return "devices_unregistered"
	case events.DeviceOnline:
		return "devices_online"
	case events.DeviceOffline:
		return "devices_offline"
	case events.ResourcesPublished:
		return "resources_published"
	case events.ResourcesUnpublished:
		return "resources_unpublished"
	case events.ResourceChanged:
		return "resource_contentchanged"
	}
	return ""
}

type diContent struct {
	DI string `json:"di"`
}

// eventBody is the OCF C2C body of an event (see the *Event definitions of
// the OCF swagger).
func eventBody(e *events.Envelope) ([]byte, error) {
	switch e.Type {
	case events.DeviceRegistered, events.DeviceUnregistered, events.DeviceOnline, events.DeviceOffline:
		return json.Marshal(map[string]any{"content": []diContent{{DI: e.DeviceID}}})
	case events.ResourcesPublished:
		var c events.ResourcesPublishedContent
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return nil, err
		}
		return linksBody(e.DeviceID, c.Links)
	case events.ResourcesUnpublished:
		var c events.ResourcesUnpublishedContent
		if err := json.Unmarshal(e.Content, &c); err != nil {
			return nil, err
		}
		links := make([]linkOut, 0, len(c.Hrefs))
		for _, h := range c.Hrefs {
			links = append(links, linkOut{"di": e.DeviceID, "href": "/" + e.DeviceID + h})
		}
		return json.Marshal(map[string]any{"content": links})
	case events.ResourceChanged:
		if len(e.Content) == 0 {
			return []byte("{}"), nil
		}
		return toJSON(e.ContentType, e.Content)
	}
	return nil, fmt.Errorf("no webhook body for %s", e.Type)
}

type linkOut map[string]any

// stableUUID derives a UUID from a source id, so an event without a
// correlation id gets the same Correlation-ID on every attempt and in
// every subscription.
func stableUUID(src string) string {
	h := sha256.Sum256([]byte(src))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func linksBody(di string, links any) ([]byte, error) {
	raw, err := json.Marshal(links)
	if err != nil {
		return nil, err
	}
	var out []linkOut
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	for _, l := range out {
		if h, ok := l["href"].(string); ok {
			l["href"] = "/" + di + h
		}
		l["di"] = di
	}
	if out == nil {
		out = []linkOut{}
	}
	return json.Marshal(map[string]any{"content": out})
}

// matches reports whether sub wants event e of OCF type t.
func matches(sub *Subscription, e *events.Envelope, t string) bool {
	if sub.Cancelled || !containsString(sub.EventTypes, t) {
		return false
	}
	if !sub.Admin && sub.Owner != e.Owner {
		return false // a device that changed hands stops reaching its old owner
	}
	switch sub.Level {
	case LevelDevices:
		return true
	case LevelDevice:
		return sub.DeviceID == e.DeviceID
	case LevelResource:
		return sub.DeviceID == e.DeviceID && sub.Href == e.Href
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fanoutEvent appends e's deliveries; d.mu is held.
type cancellation struct{ id, reason string }

func (d *Dispatcher) fanoutEvent(ctx context.Context, e *events.Envelope, source uint64, cancels *[]cancellation) error {
	t := ocfEventType(e.Type)
	var body []byte
	for _, st := range d.subs {
		if st.gone || !matches(st.sub, e, t) {
			continue
		}
		if body == nil {
			var err error
			if body, err = eventBody(e); err != nil {
				d.log.Warn("webhook fan-out: bad event content", "device_id", e.DeviceID, "type", e.Type, "err", err)
				return nil
			}
		}
		corr := e.CorrelationID
		if corr == "" {
			corr = stableUUID(e.MsgID())
		}
		if err := d.appendLocked(ctx, st, t, body, e.Time, corr, e.MsgID(), source, true); err != nil {
			return err
		}
	}
	if e.Type == events.DeviceUnregistered {
		// The device is gone: its device and resource subscriptions end
		// with subscription_cancelled, after what is already queued.
		for _, st := range d.subs {
			sub := st.sub
			if st.gone || sub.Cancelled || sub.Level == LevelDevices || sub.DeviceID != e.DeviceID {
				continue
			}
			if err := d.cancelLocked(ctx, st, cancelDevice, e.CorrelationID); err != nil {
				return err
			}
			*cancels = append(*cancels, cancellation{sub.ID, cancelDevice})
		}
	}
	return nil
}

// cancelLocked stops matching and queues subscription_cancelled; d.mu is
// held. The deliverer tears the subscription down once it is delivered.
func (d *Dispatcher) cancelLocked(ctx context.Context, st *subState, reason, correlationID string) error {
	if st.sub.Cancelled {
		return nil
	}
	sub := *st.sub
	sub.Cancelled, sub.CancelReason = true, reason
	// Only the fan-out numbers deliveries; elsewhere the cancellation
	// reaches it through the broadcast (or, if none runs right now, the
	// next one finds the cancelled document when it starts).
	if d.leading.Load() {
		if err := d.appendCancelLocked(ctx, st, correlationID); err != nil {
			return err
		}
	}
	st.sub = &sub
	return nil
}

// appendCancelLocked queues subscription_cancelled; d.mu is held.
func (d *Dispatcher) appendCancelLocked(ctx context.Context, st *subState, correlationID string) error {
	if correlationID == "" {
		correlationID = stableUUID(st.sub.ID + ":cancelled")
	}
	return d.appendLocked(ctx, st, eventSubscriptionCancelled, []byte("{}"), d.now(), correlationID, "cancelled", 0, false)
}

// ensureCancelQueuedLocked queues subscription_cancelled for a cancelled
// subscription unless its last delivery already is that; d.mu is held.
func (d *Dispatcher) ensureCancelQueuedLocked(ctx context.Context, st *subState) error {
	m, err := d.stream.GetLastMsgForSubject(ctx, webhookSubject(st.sub.ID))
	if err == nil && m.Header.Get(hdrEventType) == eventSubscriptionCancelled {
		return nil
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return d.appendCancelLocked(ctx, st, "")
}

// appendLocked publishes one delivery numbered after st's last; d.mu is
// held. source is the event's stream sequence (0 for the initial state and
// the cancellation): an event at or below st.source is already queued.
// dedupKey names the source ("<di>:<seq>", "init:n", "cancelled") so that
// a lost publish answer does not append twice.
//
// With async the publish is not awaited (the fan-out confirms a whole batch
// with awaitAppendsLocked); the number is taken at once, so later appends
// follow it.
func (d *Dispatcher) appendLocked(ctx context.Context, st *subState, eventType string, body []byte, at time.Time, correlationID, dedupKey string, source uint64, async bool) error {
	id := st.sub.ID
	if st.last == seqUnknown {
		last, src, err := d.recoverSeq(ctx, id)
		if err != nil {
			return err
		}
		st.last, st.source = last, max(st.source, src)
	}
	if source != 0 && source <= st.source {
		return nil
	}
	seq := st.last + 1
	msg := nats.NewMsg(webhookSubject(id))
	msg.Data = body
	msg.Header.Set(hdrEventType, eventType)
	msg.Header.Set(hdrSeq, strconv.FormatInt(seq, 10))
	msg.Header.Set(hdrSource, strconv.FormatUint(max(source, st.source), 10))
	msg.Header.Set(hdrEventTime, at.UTC().Format(time.RFC3339Nano))
	if correlationID != "" {
		msg.Header.Set(hdrCorrelation, correlationID)
	}
	if async {
		f, err := d.js.PublishMsgAsync(msg, jetstream.WithMsgID(id+":"+dedupKey))
		if err != nil {
			st.last, st.source = seqUnknown, 0
			return fmt.Errorf("append delivery %s: %w", id, err)
		}
		st.last, st.source, st.dirty = seq, max(source, st.source), true
		d.pending = append(d.pending, pendingAppend{st, f})
		return nil
	}
	ack, err := d.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id+":"+dedupKey))
	if err != nil {
		return fmt.Errorf("append delivery %s: %w", id, err)
	}
	st.source, st.dirty = max(source, st.source), true
	if ack.Duplicate {
		// Appended before a crash or a lost answer: keep its number.
		if orig, err := d.stream.GetMsg(ctx, ack.Sequence); err == nil {
			if n, err := strconv.ParseInt(orig.Header.Get(hdrSeq), 10, 64); err == nil && n > st.last {
				st.last = n
			}
		}
		return nil
	}
	st.last = seq
	return nil
}

// awaitAppendsLocked waits for the fan-out's unconfirmed appends. On a
// failure or a duplicate (a repeat of something stored before) the
// counters of the subscriptions involved are recovered from the stream
// before they are used again.
func (d *Dispatcher) awaitAppendsLocked(ctx context.Context) error {
	var failure error
	for _, p := range d.pending {
		select {
		case ack := <-p.f.Ok():
			if ack.Duplicate && failure == nil {
				failure = fmt.Errorf("append delivery %s: duplicate", p.st.sub.ID)
			}
		case err := <-p.f.Err():
			if failure == nil {
				failure = fmt.Errorf("append delivery %s: %w", p.st.sub.ID, err)
			}
		case <-ctx.Done():
			if failure == nil {
				failure = ctx.Err()
			}
		case <-d.closing:
			if failure == nil {
				failure = errClosing
			}
		}
	}
	if failure != nil {
		for _, p := range d.pending {
			p.st.last, p.st.source = seqUnknown, 0
		}
	}
	d.pending = d.pending[:0]
	return failure
}

// recoverSeq finds where a subscription's numbering stands: the last
// delivery in the stream, or the counter saved in the KV bucket when that
// delivery has aged out. It returns the last sequence number and the last
// source event.
func (d *Dispatcher) recoverSeq(ctx context.Context, id string) (int64, uint64, error) {
	last, source := int64(-1), uint64(0)
	if e, err := d.seqKV.Get(ctx, id); err == nil {
		a, b, _ := strings.Cut(string(e.Value()), "/")
		if n, err := strconv.ParseInt(a, 10, 64); err == nil {
			last = n
		}
		source, _ = strconv.ParseUint(b, 10, 64)
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, fmt.Errorf("recover sequence %s: %w", id, err)
	}
	m, err := d.stream.GetLastMsgForSubject(ctx, webhookSubject(id))
	switch {
	case err == nil:
		if n, err := strconv.ParseInt(m.Header.Get(hdrSeq), 10, 64); err == nil && n > last {
			last = n
		}
		if n, err := strconv.ParseUint(m.Header.Get(hdrSource), 10, 64); err == nil && n > source {
			source = n
		}
	case errors.Is(err, jetstream.ErrMsgNotFound):
	default:
		return 0, 0, fmt.Errorf("recover sequence %s: %w", id, err)
	}
	return last, source, nil
}

// flushSeqLocked saves changed counters and the fan-out position; d.mu is
// held. The position is saved last, so it never runs ahead of a counter.
func (d *Dispatcher) flushSeqLocked(ctx context.Context) error {
	// KV puts are stream publishes: send them together and wait once, so
	// saving holds the fan-out for one round trip, not one per counter.
	type put struct {
		st *subState
		f  jetstream.PubAckFuture
	}
	var puts []put
	var errs []error
	for id, st := range d.subs {
		if !st.dirty || st.gone || st.last < 0 {
			continue
		}
		f, err := d.js.PublishAsync("$KV."+seqBucket+"."+id, []byte(strconv.FormatInt(st.last, 10)+"/"+strconv.FormatUint(st.source, 10)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		puts = append(puts, put{st, f})
	}
	for _, p := range puts {
		select {
		case <-p.f.Ok():
			p.st.dirty = false
		case err := <-p.f.Err():
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		}
	}
	if len(errs) == 0 && d.pos > 0 && d.leading.Load() {
		if _, err := d.seqKV.Put(ctx, fanoutPosKey, []byte(strconv.FormatUint(d.pos, 10))); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		d.flushed = time.Now()
	}
	return errors.Join(errs...)
}

// --- delivery ---

func (d *Dispatcher) startDeliverer(st *subState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := d.stream.Consumer(ctx, webhookConsumer(st.sub.ID))
	if err != nil {
		return fmt.Errorf("webhook consumer %s: %w", st.sub.ID, err)
	}
	// MaxAckPending 1 keeps one delivery in flight; a pull request for more
	// stays open across deliveries, so the next one comes with the ack's
	// round trip instead of a new request's.
	cc, err := cons.Consume(func(m jetstream.Msg) { d.deliver(st, m) },
		jetstream.PullMaxMessages(16), jetstream.ConsumeErrHandler(d.consumeError))
	if err != nil {
		return fmt.Errorf("webhook deliverer %s: %w", st.sub.ID, err)
	}
	d.mu.Lock()
	st.cc = cc
	d.mu.Unlock()
	return nil
}

// backoff is the delay before attempt n+1: exponential from RetryBase,
// capped at RetryMax, with equal jitter so failing endpoints do not get
// retries in lock step.
func (d *Dispatcher) backoff(attempts uint64) time.Duration {
	delay := d.cfg.RetryBase
	for i := uint64(1); i < attempts && delay < d.cfg.RetryMax; i++ {
		delay *= 2
	}
	delay = min(delay, d.cfg.RetryMax)
	half := delay / 2
	return half + rand.N(half+1)
}

// deliver posts one delivery; Consume calls it serially per subscription.
func (d *Dispatcher) deliver(st *subState, m jetstream.Msg) {
	d.mu.Lock()
	sub, gone := st.sub, st.gone
	d.mu.Unlock()
	if gone {
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	h := m.Headers()
	eventType := h.Get(hdrEventType)
	seq, _ := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	at, _ := time.Parse(time.RFC3339Nano, h.Get(hdrEventTime))
	cancelled := eventType == eventSubscriptionCancelled
	if sub.CancelReason == cancelGone && !cancelled {
		_ = m.Ack() // the endpoint said 410: nothing more but the cancellation
		return
	}
	hdr := http.Header{}
	webhook.Sign(hdr, sub.secret, webhook.Delivery{
		ContentType: "application/json", EventType: eventType, SubscriptionID: sub.ID, Sequence: seq,
		CorrelationID: h.Get(hdrCorrelation), EventTime: at, WebhookID: sub.ID + ":" + strconv.FormatUint(seq, 10),
	}, m.Data(), d.now())
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	status, err := d.client.Post(ctx, sub.EventsURL, hdr, m.Data())
	cancel()
	attrs := []any{"subscription_id", sub.ID, "seq", seq, "event_type", eventType, "attempt", meta.NumDelivered}
	switch {
	case err == nil && status >= 200 && status < 300:
		_ = m.Ack()
		if cancelled {
			d.teardown(st)
		}
		return
	case err == nil && status == http.StatusGone:
		_ = m.Ack()
		if cancelled {
			d.teardown(st)
			return
		}
		d.log.Info("webhook endpoint answered 410: cancelling the subscription", attrs...)
		d.cancel(st, cancelGone, h.Get(hdrCorrelation))
		return
	}
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // the URL may carry a subscriber's token: not in logs
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	} else {
		attrs = append(attrs, "status", status)
	}
	if cancelled && sub.CancelReason == cancelGone {
		// One try: the endpoint already said it wants nothing more.
		_ = m.Ack()
		d.teardown(st)
		return
	}
	if age := d.now().Sub(meta.Timestamp); age >= d.cfg.RetryPeriod {
		_ = m.Term()
		d.log.Warn("webhook delivery dropped after the retry period", append(attrs, "audit", true, "age", age.Round(time.Second))...)
		if cancelled {
			d.teardown(st)
		}
		return
	}
	delay := d.backoff(meta.NumDelivered)
	d.log.Debug("webhook delivery failed; retrying", append(attrs, "retry_in", delay)...)
	_ = m.NakWithDelay(delay)
}

// cancel starts cancelling a subscription: no more events match it and
// subscription_cancelled is queued after what is pending.
func (d *Dispatcher) cancel(st *subState, reason, correlationID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.mu.Lock()
	id := st.sub.ID
	err := d.cancelLocked(ctx, st, reason, correlationID)
	if err == nil {
		err = d.flushSeqLocked(ctx)
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Warn("webhook cancel", "subscription_id", id, "err", err)
		return
	}
	if err := d.store.markCancelled(ctx, id, reason); err != nil {
		d.log.Warn("webhook cancel", "subscription_id", id, "err", err)
	}
	d.broadcast("cancel", id)
}

// teardown removes a cancelled subscription everywhere: its deliverer,
// consumer, queued deliveries, counter and document.
func (d *Dispatcher) teardown(st *subState) {
	d.mu.Lock()
	if st.gone {
		d.mu.Unlock()
		return
	}
	st.gone = true
	id, cc, reason := st.sub.ID, st.cc, st.sub.CancelReason
	delete(d.subs, id)
	d.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.store.delete(ctx, id); err != nil {
		d.log.Warn("webhook teardown", "subscription_id", id, "err", err)
	}
	_ = d.stream.DeleteConsumer(ctx, webhookConsumer(id))
	_ = d.stream.Purge(ctx, jetstream.WithPurgeSubject(webhookSubject(id)))
	_ = d.seqKV.Delete(ctx, id)
	d.broadcast("delete", id)
	d.log.Info("subscription removed", "subscription_id", id, "reason", reason, "audit", true)
}

// --- subscriptions ---

var errClosing = errors.New("webhook dispatcher closing")

// ErrSubscriptionNotFound is returned for an unknown or foreign subscription.
var ErrSubscriptionNotFound = errors.New("subscription not found")

// Create stores a subscription, queues its initial-state events (sequence
// numbers from 0) and starts delivering.
func (d *Dispatcher) Create(ctx context.Context, sub *Subscription, secret string) error {
	sub.secret = secret
	if err := d.store.insert(ctx, sub); err != nil {
		return err
	}
	if err := d.activate(ctx, sub); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = d.store.delete(dctx, sub.ID)
		_ = d.stream.DeleteConsumer(dctx, webhookConsumer(sub.ID))
		_ = d.stream.Purge(dctx, jetstream.WithPurgeSubject(webhookSubject(sub.ID)))
		return err
	}
	d.broadcast("add", sub.ID)
	return nil
}

func (d *Dispatcher) activate(ctx context.Context, sub *Subscription) error {
	if err := d.ensureConsumer(ctx, sub.ID); err != nil {
		return err
	}
	d.mu.Lock()
	snapshotPos := d.pos
	d.mu.Unlock()
	initial, err := d.initialState(ctx, sub)
	if err != nil {
		return err
	}
	st := &subState{sub: sub, last: -1}
	d.mu.Lock()
	st.source = snapshotPos
	for i, ev := range initial {
		if err = d.appendLocked(ctx, st, ev.eventType, ev.body, d.now(), sub.CorrelationID, "init:"+strconv.Itoa(i), 0, false); err != nil {
			break
		}
	}
	if err == nil && d.leading.Load() {
		// Events the fan-out handled while the snapshot was taken follow
		// it (possibly repeating what the snapshot already shows).
		err = d.catchUpLocked(ctx, st, snapshotPos, d.pos)
	}
	if err == nil {
		// From here on the fan-out matches events for it: nothing is
		// numbered before the initial state.
		d.subs[sub.ID] = st
		err = d.flushSeqLocked(ctx)
	}
	d.mu.Unlock()
	if err != nil {
		d.mu.Lock()
		delete(d.subs, sub.ID)
		d.mu.Unlock()
		return err
	}
	if err := d.startDeliverer(st); err != nil {
		d.mu.Lock()
		delete(d.subs, sub.ID)
		d.mu.Unlock()
		return err
	}
	return nil
}

// maxCatchUp bounds the events re-read for a new subscription.
const maxCatchUp = 1000

// catchUpLocked appends the events in (from, to] of the event stream that
// match st; d.mu is held.
func (d *Dispatcher) catchUpLocked(ctx context.Context, st *subState, from, to uint64) error {
	if to <= from {
		return nil
	}
	if to-from > maxCatchUp {
		d.log.Warn("webhook subscribe: too many events during the snapshot; some may be missing", "subscription_id", st.sub.ID, "events", to-from)
		from = to - maxCatchUp
	}
	for seq := from + 1; seq <= to; seq++ {
		m, err := d.evStream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		e, err := events.Decode(m.Data)
		if err != nil {
			continue
		}
		t := ocfEventType(e.Type)
		if !matches(st.sub, e, t) {
			continue
		}
		body, err := eventBody(e)
		if err != nil {
			continue
		}
		corr := e.CorrelationID
		if corr == "" {
			corr = stableUUID(e.MsgID())
		}
		if err := d.appendLocked(ctx, st, t, body, e.Time, corr, e.MsgID(), seq, false); err != nil {
			return err
		}
	}
	st.source = max(st.source, to)
	return nil
}

type initialEvent struct {
	eventType string
	body      []byte
}

// initialState is the first notification of each subscribed event type:
// the current state as the registry knows it.
func (d *Dispatcher) initialState(ctx context.Context, sub *Subscription) ([]initialEvent, error) {
	caller := registryapi.Caller{UserID: sub.Owner, Admin: sub.Admin}
	var out []initialEvent
	add := func(t string, body []byte) { out = append(out, initialEvent{t, body}) }
	switch sub.Level {
	case LevelDevices:
		page, err := d.registry.List(ctx, registryapi.ListRequest{Caller: caller})
		if err != nil {
			return nil, err
		}
		for _, t := range sub.EventTypes {
			content := []diContent{}
			for _, dev := range page.Devices {
				if t == "devices_registered" || t == "devices_online" && dev.Online || t == "devices_offline" && !dev.Online {
					content = append(content, diContent{DI: dev.DeviceID})
				}
			}
			body, _ := json.Marshal(map[string]any{"content": content})
			add(t, body)
		}
	case LevelDevice:
		dev, err := d.registry.Get(ctx, registryapi.GetRequest{Caller: caller, DeviceID: sub.DeviceID})
		if err != nil {
			return nil, err
		}
		for _, t := range sub.EventTypes {
			if t == "resources_published" {
				body, err := linksBody(dev.DeviceID, dev.Links)
				if err != nil {
					return nil, err
				}
				add(t, body)
			} else {
				add(t, []byte(`{"content":[]}`))
			}
		}
	case LevelResource:
		res, err := d.registry.Resource(ctx, registryapi.ResourceRequest{Caller: caller, DeviceID: sub.DeviceID, Href: sub.Href})
		if errors.Is(err, registryapi.ErrNotFound) {
			return nil, nil // no content yet: the first change is the first event
		}
		if err != nil {
			return nil, err
		}
		body, err := toJSON(res.ContentType, res.Content)
		if err != nil {
			return nil, err
		}
		add("resource_contentchanged", body)
	}
	return out, nil
}

// Get returns a subscription the caller owns (an admin may see any).
func (d *Dispatcher) Get(id string, caller registryapi.Caller) (*Subscription, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.subs[id]
	if !ok || st.gone || st.sub.Cancelled || !caller.Admin && st.sub.Owner != caller.UserID {
		return nil, ErrSubscriptionNotFound
	}
	return st.sub, nil
}

// List returns the caller's own subscriptions, oldest first.
func (d *Dispatcher) List(caller registryapi.Caller) []*Subscription {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*Subscription
	for _, st := range d.subs {
		if !st.gone && !st.sub.Cancelled && st.sub.Owner == caller.UserID {
			out = append(out, st.sub)
		}
	}
	sortSubscriptions(out)
	return out
}

// Delete cancels a subscription: subscription_cancelled is delivered after
// what is queued, then it is removed.
func (d *Dispatcher) Delete(ctx context.Context, id string, caller registryapi.Caller, correlationID string) error {
	if _, err := d.Get(id, caller); err != nil {
		return err
	}
	d.mu.Lock()
	st := d.subs[id]
	d.mu.Unlock()
	if st == nil {
		return ErrSubscriptionNotFound
	}
	d.mu.Lock()
	err := d.cancelLocked(ctx, st, cancelUser, correlationID)
	if err == nil {
		err = d.flushSeqLocked(ctx)
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := d.store.markCancelled(ctx, id, cancelUser); err != nil {
		return err
	}
	d.broadcast("cancel", id)
	return nil
}

// ValidateURL checks an eventsUrl against the address policy.
func (d *Dispatcher) ValidateURL(ctx context.Context, raw string) error {
	return d.policy.ValidateURL(ctx, raw)
}

// --- replicas ---

type controlMsg struct {
	Op     string `json:"op"`
	ID     string `json:"id"`
	Sender string `json:"sender"`
}

func (d *Dispatcher) broadcast(op, id string) {
	data, _ := json.Marshal(controlMsg{Op: op, ID: id, Sender: d.nc.ConnectedServerId() + "/" + strconv.FormatUint(d.clientID(), 10)})
	_ = d.nc.Publish(webhookControl, data)
}

func (d *Dispatcher) clientID() uint64 {
	id, _ := d.nc.GetClientID()
	return id
}

// handleControl applies another replica's change to the in-memory set.
func (d *Dispatcher) handleControl(m *nats.Msg) {
	var c controlMsg
	if json.Unmarshal(m.Data, &c) != nil || c.Sender == d.nc.ConnectedServerId()+"/"+strconv.FormatUint(d.clientID(), 10) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch c.Op {
	case "add", "cancel":
		sub, err := d.store.get(ctx, c.ID)
		if err != nil {
			return
		}
		d.mu.Lock()
		st, ok := d.subs[c.ID]
		if ok {
			if sub.Cancelled && !st.sub.Cancelled {
				// Cancelled elsewhere: the fan-out queues the cancellation.
				err := d.cancelLocked(ctx, st, sub.CancelReason, "")
				if err == nil && d.leading.Load() {
					err = d.flushSeqLocked(ctx)
				}
				if err != nil {
					d.log.Warn("webhook replica sync: cancel", "subscription_id", c.ID, "err", err)
				}
			}
			d.mu.Unlock()
			return
		}
		st = &subState{sub: sub, last: seqUnknown}
		d.subs[c.ID] = st
		d.mu.Unlock()
		if err := d.startDeliverer(st); err != nil {
			d.log.Warn("webhook replica sync", "subscription_id", c.ID, "err", err)
		}
	case "delete":
		d.mu.Lock()
		var cc jetstream.ConsumeContext
		if st, ok := d.subs[c.ID]; ok {
			st.gone, cc = true, st.cc
			delete(d.subs, c.ID)
		}
		d.mu.Unlock()
		if cc != nil {
			cc.Stop()
		}
	}
}
