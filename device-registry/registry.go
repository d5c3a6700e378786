package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/leases"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/odata"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// Config configures the registry.
type Config struct {
	NATS   *nats.Conn
	DB     *mongo.Database
	Logger *slog.Logger
	// Stream sizes the event stream, which the registry ensures exists.
	Stream events.StreamOptions
	// Consumer is the durable consumer name; replicas of the registry share it.
	Consumer string
	// KVReplicas is the replica count of the twin and online buckets.
	KVReplicas int
	// LeaseTTL is the gateway lease lifetime (as the gateways use it);
	// default leases.DefaultTTL. Devices of a gateway whose lease expired
	// are marked offline within LeaseTTL plus one sweep.
	LeaseTTL time.Duration
	// SweepEvery is how often leases are checked; default LeaseTTL/3.
	SweepEvery time.Duration
	Now        func() time.Time
	// OnApplied, if set, is called after each event is durable and visible
	// (benchmarks measure latency with it). It must not block.
	OnApplied func(*events.Envelope)
}

// Registry consumes device events and answers queries.
type Registry struct {
	cfg   Config
	log   *slog.Logger
	store *store

	mu  sync.RWMutex
	idx *index

	cc    jetstream.ConsumeContext
	svc   micro.Service
	ready atomic.Bool

	leases    jetstream.KeyValue
	pub       *events.Publisher
	seq       *events.Sequencer
	stopSweep context.CancelFunc
	sweepDone chan struct{}

	inbox     chan jetstream.Msg
	applyDone chan struct{}
	closeOnce sync.Once
}

// New loads the registry's state, starts consuming events and serving queries.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "device-registry"
	}
	// A twin write whose ack has not come in 3 s is taken as failed and its
	// events are redelivered a second later. Acks take milliseconds; a
	// stream that failed to write (a full disk) never answers, and without
	// this bound the apply loop waited its whole 30 s for each such write,
	// also after JetStream was restarted.
	js, err := jetstream.New(cfg.NATS, jetstream.WithPublishAsyncTimeout(3*time.Second))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	// Replicated streams on a cluster that has just formed can take longer
	// than one API call's timeout to create.
	var stream jetstream.Stream
	if err := platform.Retry(ctx, time.Minute, func(ctx context.Context) (err error) {
		stream, err = events.EnsureStream(ctx, js, cfg.Stream)
		return err
	}); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	var st *store
	if err := platform.Retry(ctx, time.Minute, func(ctx context.Context) (err error) {
		st, err = openStore(ctx, cfg.DB, js, cfg.KVReplicas, cfg.Stream.Memory)
		return err
	}); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	started := time.Now()
	idx, err := st.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = leases.DefaultTTL
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = cfg.LeaseTTL / 3
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	leaseKV, err := leases.Open(ctx, js, cfg.LeaseTTL, cfg.KVReplicas, cfg.Stream.Memory)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{cfg: cfg, log: cfg.Logger.With("service", "device-registry"), store: st, idx: idx,
		leases: leaseKV, pub: events.NewPublisher(js), seq: events.NewSequencer(cfg.Now), sweepDone: make(chan struct{}),
		inbox: make(chan jetstream.Msg, 2*maxBatch), applyDone: make(chan struct{})}
	go r.applyLoop()
	r.log.Info("registry state loaded", "devices", len(idx.devices), "took", time.Since(started))

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1024,
		FilterSubject: events.SubjectAll,
	})
	if err != nil {
		return nil, fmt.Errorf("registry consumer: %w", err)
	}
	if r.svc, err = r.startService(); err != nil {
		return nil, err
	}
	r.cc, err = cons.Consume(r.handleMsg, events.ConsumeOptions()...)
	if err != nil {
		_ = r.svc.Stop()
		return nil, fmt.Errorf("registry consume: %w", err)
	}
	sweepCtx, stop := context.WithCancel(context.Background())
	r.stopSweep = stop
	go r.sweepLoop(sweepCtx)
	r.ready.Store(true)
	return r, nil
}

// Ready reports whether the registry consumes and serves.
func (r *Registry) Ready() bool { return r.ready.Load() && r.cfg.NATS.IsConnected() }

// Close stops consuming and serving; it may be called more than once.
func (r *Registry) Close() { r.closeOnce.Do(r.close) }

func (r *Registry) close() {
	r.ready.Store(false)
	if r.stopSweep != nil {
		r.stopSweep()
		<-r.sweepDone
	}
	if r.cc != nil {
		r.cc.Drain()
		<-r.cc.Closed()
	}
	close(r.inbox)
	<-r.applyDone
	if r.svc != nil {
		_ = r.svc.Stop()
	}
}

// handleMsg hands a message to the apply loop; Consume calls it serially.
func (r *Registry) handleMsg(msg jetstream.Msg) { r.inbox <- msg }

// maxBatch bounds how many events one apply round handles.
const maxBatch = 512

// applyLoop applies events in batches: whatever has arrived while the last
// batch was written goes into the next one, so a busy registry writes many
// twin updates per round trip and an idle one still applies each event at
// once.
func (r *Registry) applyLoop() {
	defer close(r.applyDone)
	for msg := range r.inbox {
		batch := []jetstream.Msg{msg}
	more:
		for len(batch) < maxBatch {
			select {
			case m, ok := <-r.inbox:
				if !ok {
					break more
				}
				batch = append(batch, m)
			default:
				break more
			}
		}
		r.applyBatch(batch)
	}
}

// pendingTwin is the newest content of one resource within a batch.
type pendingTwin struct {
	e    *events.Envelope
	msgs []jetstream.Msg
	all  []*events.Envelope
}

func (r *Registry) applyBatch(batch []jetstream.Msg) {
	// Each write gets its own deadline. With one deadline for the batch, a
	// slow database (a reconnect storm of publishes after a restart) used it
	// up and every later event of the batch, twin writes included, failed
	// at once and was nak'ed, so the twin stood still while the storm lasted.
	pending := map[string]*pendingTwin{}
	var order []string
	flush := func() {
		if len(order) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r.flushTwins(ctx, pending, order)
			cancel()
			pending, order = map[string]*pendingTwin{}, nil
		}
	}
	for _, msg := range batch {
		e, err := events.Decode(msg.Data())
		if err != nil {
			r.log.Warn("dropping malformed event", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			continue
		}
		if e.Type == events.ResourceChanged && e.Href != "" && r.known(e.DeviceID) {
			key := twinKey(e.DeviceID, e.Href)
			p := pending[key]
			if p == nil {
				p = &pendingTwin{e: e}
				pending[key] = p
				order = append(order, key)
			} else if e.Sequence > p.e.Sequence {
				p.e = e
			}
			p.msgs = append(p.msgs, msg)
			p.all = append(p.all, e)
			continue
		}
		// Anything else is applied on its own, after the twin writes before it.
		flush()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = r.apply(ctx, e)
		cancel()
		if err != nil {
			r.log.Error("apply event", "device_id", e.DeviceID, "type", e.Type, "err", err)
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
		r.applied(e)
	}
	flush()
}

func (r *Registry) applied(e *events.Envelope) {
	if r.cfg.OnApplied != nil {
		r.cfg.OnApplied(e)
	}
}

func (r *Registry) known(deviceID string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.idx.devices[deviceID]
	return d != nil && !d.gone()
}

// flushTwins writes the newest content of each resource in one round of
// asynchronous KV writes, then makes it visible and acks every event it
// covers. Only the apply loop writes, so what it read stays current.
func (r *Registry) flushTwins(ctx context.Context, pending map[string]*pendingTwin, order []string) {
	type write struct {
		key string
		p   *pendingTwin
		v   *twinValue
		f   jetstream.PubAckFuture
	}
	var writes []write
	r.mu.RLock()
	for _, key := range order {
		p := pending[key]
		d := r.idx.devices[p.e.DeviceID]
		if d == nil {
			continue
		}
		if t := d.twin[p.e.Href]; t != nil && p.e.Sequence <= t.Sequence {
			continue // older than what is stored: nothing to write
		}
		writes = append(writes, write{key: key, p: p, v: &twinValue{Sequence: p.e.Sequence, Time: p.e.Time, Status: p.e.Status, ContentType: p.e.ContentType, Content: p.e.Content}})
	}
	r.mu.RUnlock()
	failed := map[string]bool{}
	for i := range writes {
		f, err := r.store.putTwinAsync(writes[i].key, writes[i].v)
		if err != nil {
			failed[writes[i].key] = true
			continue
		}
		writes[i].f = f
	}
	for _, w := range writes {
		if w.f == nil {
			continue
		}
		select {
		case <-w.f.Ok():
		case err := <-w.f.Err():
			r.log.Error("save twin", "device_id", w.p.e.DeviceID, "href", w.p.e.Href, "err", err)
			failed[w.key] = true
		case <-ctx.Done():
			failed[w.key] = true
		}
	}
	r.mu.Lock()
	for _, w := range writes {
		if failed[w.key] {
			continue
		}
		if d := r.idx.devices[w.p.e.DeviceID]; d != nil {
			d.twin[w.p.e.Href] = w.v
		}
	}
	r.mu.Unlock()
	for _, key := range order {
		p := pending[key]
		for _, m := range p.msgs {
			if failed[key] {
				_ = m.NakWithDelay(time.Second)
			} else {
				_ = m.Ack()
			}
		}
		if !failed[key] {
			for _, e := range p.all {
				r.applied(e)
			}
		}
	}
}

// apply makes the event's change durable and then visible. Events older than
// the state they would change are ignored, so replays are harmless.
func (r *Registry) apply(ctx context.Context, e *events.Envelope) error {
	// One writer at a time keeps "durable first, then memory" simple; queries
	// only take the read lock while copying.
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.idx.devices[e.DeviceID]
	if e.Type == events.DeviceUnregistered {
		if d != nil && (e.Sequence < d.doc.RegisteredSeq || e.Sequence <= d.doc.UnregisteredSeq) {
			return nil
		}
		tomb := deviceDoc{ID: e.DeviceID, Owner: e.Owner, UnregisteredSeq: e.Sequence}
		var hrefs []string
		if d != nil {
			tomb.Owner, tomb.RegisteredSeq = d.doc.Owner, d.doc.RegisteredSeq
			hrefs = slices.Collect(maps.Keys(d.twin))
		}
		if err := r.store.forgetDevice(ctx, &tomb, hrefs); err != nil {
			return err
		}
		r.idx.devices[e.DeviceID] = &device{doc: tomb, twin: map[string]*twinValue{}}
		return nil
	}
	if d != nil && d.gone() {
		if e.Type != events.DeviceRegistered || e.Sequence <= d.doc.UnregisteredSeq {
			return nil // an event of a forgotten device, or older than its removal
		}
		d = nil // registered again: a new life
	}
	isNew := d == nil
	if isNew {
		// Any event of an unknown device registers it with the event's owner,
		// so a consumer that starts mid-stream still sees the device.
		d = &device{doc: deviceDoc{ID: e.DeviceID, Owner: e.Owner, RegisteredAt: e.Time}, twin: map[string]*twinValue{}}
	}
	switch e.Type {
	case events.DeviceRegistered:
		if e.Sequence <= d.doc.RegisteredSeq {
			return nil
		}
		doc := d.doc
		if doc.Owner != e.Owner { // re-registered to another user: forget the old one's view
			doc.Links = nil
		}
		doc.Owner, doc.RegisteredSeq, doc.RegisteredAt = e.Owner, e.Sequence, e.Time
		if err := r.store.put(ctx, &doc, isNew); err != nil {
			return err
		}
		d.doc = doc
	case events.ResourcesPublished, events.ResourcesUnpublished:
		if e.Sequence <= d.doc.LinksSeq {
			return nil
		}
		doc := d.doc
		if e.Type == events.ResourcesPublished {
			var c events.ResourcesPublishedContent
			if err := json.Unmarshal(e.Content, &c); err != nil {
				r.log.Warn("bad resources_published content", "device_id", e.DeviceID, "err", err)
				return nil
			}
			doc.Links = mergeLinks(doc.Links, c.Links)
		} else {
			var c events.ResourcesUnpublishedContent
			if err := json.Unmarshal(e.Content, &c); err != nil {
				r.log.Warn("bad resources_unpublished content", "device_id", e.DeviceID, "err", err)
				return nil
			}
			doc.Links = removeLinks(doc.Links, c.Hrefs)
		}
		doc.LinksSeq = e.Sequence
		if !isNew && reflect.DeepEqual(doc.Links, d.doc.Links) {
			// A device that reconnects publishes the same links again, and
			// after a restart the whole fleet does at once. Saving the
			// document would cost a database write per device (a collection
			// scan on FerretDB) with every twin update queued behind it, for
			// no change: only the sequence moves on, in memory.
			d.doc = doc
			break
		}
		if err := r.store.put(ctx, &doc, isNew); err != nil {
			return err
		}
		d.doc = doc
	case events.DeviceOnline, events.DeviceOffline:
		if e.Sequence <= d.online.Sequence {
			return nil
		}
		if isNew {
			if err := r.store.put(ctx, &d.doc, true); err != nil {
				return err
			}
		}
		v := onlineValue{Online: e.Type == events.DeviceOnline, Since: e.Time, Sequence: e.Sequence}
		if v.Online && len(e.Content) > 0 {
			var c events.OnlineContent
			if json.Unmarshal(e.Content, &c) == nil {
				v.Gateway = c.Gateway
			}
		}
		if !v.Online && len(e.Content) > 0 && d.online.Online && d.online.Gateway != "" {
			var c events.OfflineContent
			if json.Unmarshal(e.Content, &c) == nil && c.Gateway != "" && c.Gateway != d.online.Gateway {
				return nil // the device moved to another gateway meanwhile
			}
		}
		if err := r.store.saveOnline(ctx, e.DeviceID, &v); err != nil {
			return err
		}
		d.online = v
	case events.ResourceChanged:
		if e.Href == "" {
			return nil
		}
		if t := d.twin[e.Href]; t != nil && e.Sequence <= t.Sequence {
			return nil
		}
		if isNew {
			if err := r.store.put(ctx, &d.doc, true); err != nil {
				return err
			}
		}
		v := &twinValue{Sequence: e.Sequence, Time: e.Time, Status: e.Status, ContentType: e.ContentType, Content: e.Content}
		if err := r.store.saveTwin(ctx, e.DeviceID, e.Href, v); err != nil {
			return err
		}
		d.twin[e.Href] = v
	default:
		return nil
	}
	r.idx.devices[e.DeviceID] = d
	return nil
}

func (r *Registry) startService() (micro.Service, error) {
	svc, err := micro.AddService(r.cfg.NATS, micro.Config{
		Name:        registryapi.ServiceName,
		Version:     "0.1.0",
		Description: "device registry queries",
		QueueGroup:  "device-registry",
	})
	if err != nil {
		return nil, fmt.Errorf("registry service: %w", err)
	}
	add := func(name, subject string, h func(micro.Request)) error {
		return svc.AddEndpoint(name, micro.HandlerFunc(h), micro.WithEndpointSubject(subject))
	}
	if err := errors.Join(
		add("list", registryapi.SubjectList, serve(r.List)),
		add("get", registryapi.SubjectGet, serve(r.Get)),
		add("resource", registryapi.SubjectResource, serve(r.Resource)),
	); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("registry endpoints: %w", err)
	}
	return svc, nil
}

// serve adapts a query method to a micro endpoint: decode, call, answer,
// with registryapi's sentinel errors mapped to error codes.
func serve[Req, Resp any](method func(context.Context, Req) (Resp, error)) func(micro.Request) {
	return func(req micro.Request) {
		var q Req
		if err := json.Unmarshal(req.Data(), &q); err != nil {
			_ = req.Error(registryapi.CodeBadRequest, "malformed request: "+err.Error(), nil)
			return
		}
		resp, err := method(context.Background(), q)
		switch {
		case errors.Is(err, registryapi.ErrNotFound):
			_ = req.Error(registryapi.CodeNotFound, strings.TrimPrefix(err.Error(), "not found: "), nil)
		case errors.Is(err, registryapi.ErrBadRequest):
			_ = req.Error(registryapi.CodeBadRequest, strings.TrimPrefix(err.Error(), "bad request: "), nil)
		case err != nil:
			_ = req.Error(registryapi.CodeInternal, err.Error(), nil)
		default:
			_ = req.RespondJSON(resp)
		}
	}
}

func badRequest(err error) error { return fmt.Errorf("%w: %v", registryapi.ErrBadRequest, err) }

// List answers a page of the caller's devices. The registry is itself a
// registryapi.Querier, so a c2c-api in the same process skips NATS.
func (r *Registry) List(_ context.Context, q registryapi.ListRequest) (*registryapi.ListResponse, error) {
	if q.Skip < 0 || q.Limit < 0 {
		return nil, badRequest(errors.New("skip and limit must not be negative"))
	}
	filter, err := odata.ParseFilter(q.Filter, registryapi.DeviceFields)
	if err != nil {
		return nil, badRequest(err)
	}
	order, err := odata.ParseOrderBy(q.OrderBy, registryapi.DeviceFields)
	if err != nil {
		return nil, badRequest(err)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	all, err := r.idx.list(q.Caller, filter, order)
	if err != nil {
		return nil, badRequest(err)
	}
	page := all[min(q.Skip, len(all)):]
	if q.Limit > 0 && len(page) > q.Limit {
		page = page[:q.Limit]
	}
	if q.WithContent {
		for i := range page {
			r.idx.devices[page[i].DeviceID].withContent(&page[i])
		}
	}
	return &registryapi.ListResponse{Total: len(all), Devices: page}, nil
}

// lookup returns a device the caller may see; a device of someone else is
// "not found" so its existence does not leak.
func (r *Registry) lookup(c registryapi.Caller, deviceID string) *device {
	d := r.idx.devices[deviceID]
	if d == nil || !d.visibleTo(c) {
		return nil
	}
	return d
}

// Get answers one device the caller may see.
func (r *Registry) Get(_ context.Context, q registryapi.GetRequest) (*registryapi.Device, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.lookup(q.Caller, q.DeviceID)
	if d == nil {
		return nil, fmt.Errorf("%w: device not found", registryapi.ErrNotFound)
	}
	v := d.view()
	if q.WithContent {
		d.withContent(&v)
	}
	return &v, nil
}

// CommandTarget answers what a live request to href of a device needs to
// know: whether the caller may see the device (an error wrapping
// registryapi.ErrNotFound if not, as Get), whether the device published
// href and whether it is online. It is Get without building the device's
// view, which clones its links and decodes its /oic/d, for every live
// request; the API uses it when the registry is in its process.
func (r *Registry) CommandTarget(_ context.Context, c registryapi.Caller, deviceID, href string) (published, online bool, err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.lookup(c, deviceID)
	if d == nil {
		return false, false, fmt.Errorf("%w: device not found", registryapi.ErrNotFound)
	}
	return slices.ContainsFunc(d.doc.Links, func(l ocf.Link) bool { return l.Href == href }), d.online.Online, nil
}

// Resource answers the twin content of a published resource.
func (r *Registry) Resource(ctx context.Context, q registryapi.ResourceRequest) (*registryapi.Resource, error) {
	res, err := r.ResourceValue(ctx, q)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// ResourceValue is Resource answering a value, which a caller in the same
// process keeps on its stack: a twin read then allocates no answer.
func (r *Registry) ResourceValue(_ context.Context, q registryapi.ResourceRequest) (registryapi.Resource, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.lookup(q.Caller, q.DeviceID)
	if d == nil {
		return registryapi.Resource{}, fmt.Errorf("%w: device not found", registryapi.ErrNotFound)
	}
	if !slices.ContainsFunc(d.doc.Links, func(l ocf.Link) bool { return l.Href == q.Href }) {
		return registryapi.Resource{}, fmt.Errorf("%w: resource not published", registryapi.ErrNotFound)
	}
	t := d.twin[q.Href]
	if t == nil {
		return registryapi.Resource{}, fmt.Errorf("%w: resource content not yet known", registryapi.ErrNotFound)
	}
	// Content is never modified in place (a new twin value replaces it), so
	// the answer may share it.
	return registryapi.Resource{DeviceID: q.DeviceID, Href: q.Href, Sequence: t.Sequence, Time: t.Time, Status: t.Status, ContentType: t.ContentType, Content: t.Content}, nil
}
