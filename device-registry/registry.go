package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/odata"
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
}

// New loads the registry's state, starts consuming events and serving queries.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "device-registry"
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	stream, err := events.EnsureStream(ctx, js, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	st, err := openStore(ctx, cfg.DB, js, cfg.KVReplicas, cfg.Stream.Memory)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	started := time.Now()
	idx, err := st.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{cfg: cfg, log: cfg.Logger.With("service", "device-registry"), store: st, idx: idx}
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
	r.cc, err = cons.Consume(r.handleMsg)
	if err != nil {
		_ = r.svc.Stop()
		return nil, fmt.Errorf("registry consume: %w", err)
	}
	r.ready.Store(true)
	return r, nil
}

// Ready reports whether the registry consumes and serves.
func (r *Registry) Ready() bool { return r.ready.Load() && r.cfg.NATS.IsConnected() }

// Close stops consuming and serving.
func (r *Registry) Close() {
	r.ready.Store(false)
	if r.cc != nil {
		r.cc.Drain()
		<-r.cc.Closed()
	}
	if r.svc != nil {
		_ = r.svc.Stop()
	}
}

func (r *Registry) handleMsg(msg jetstream.Msg) {
	e, err := events.Decode(msg.Data())
	if err != nil {
		r.log.Warn("dropping malformed event", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.apply(ctx, e); err != nil {
		r.log.Error("apply event", "device_id", e.DeviceID, "type", e.Type, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
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
		if d == nil || e.Sequence < d.doc.RegisteredSeq {
			return nil
		}
		if err := r.store.deleteDevice(ctx, e.DeviceID, slices.Collect(maps.Keys(d.twin))); err != nil {
			return err
		}
		delete(r.idx.devices, e.DeviceID)
		return nil
	}
	if d == nil {
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
		if err := r.store.saveDevice(ctx, &doc); err != nil {
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
		if err := r.store.saveDevice(ctx, &doc); err != nil {
			return err
		}
		d.doc = doc
	case events.DeviceOnline, events.DeviceOffline:
		if e.Sequence <= d.online.Sequence {
			return nil
		}
		if d.doc.RegisteredSeq == 0 && d.doc.LinksSeq == 0 {
			if err := r.store.saveDevice(ctx, &d.doc); err != nil {
				return err
			}
		}
		v := onlineValue{Online: e.Type == events.DeviceOnline, Since: e.Time, Sequence: e.Sequence}
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
		add("list", registryapi.SubjectList, r.serveList),
		add("get", registryapi.SubjectGet, r.serveGet),
		add("resource", registryapi.SubjectResource, r.serveResource),
	); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("registry endpoints: %w", err)
	}
	return svc, nil
}

func decodeRequest(req micro.Request, v any) bool {
	if err := json.Unmarshal(req.Data(), v); err != nil {
		_ = req.Error(registryapi.CodeBadRequest, "malformed request: "+err.Error(), nil)
		return false
	}
	return true
}

func (r *Registry) serveList(req micro.Request) {
	var q registryapi.ListRequest
	if !decodeRequest(req, &q) {
		return
	}
	if q.Skip < 0 || q.Limit < 0 {
		_ = req.Error(registryapi.CodeBadRequest, "skip and limit must not be negative", nil)
		return
	}
	filter, err := odata.ParseFilter(q.Filter, registryapi.DeviceFields)
	if err != nil {
		_ = req.Error(registryapi.CodeBadRequest, err.Error(), nil)
		return
	}
	order, err := odata.ParseOrderBy(q.OrderBy, registryapi.DeviceFields)
	if err != nil {
		_ = req.Error(registryapi.CodeBadRequest, err.Error(), nil)
		return
	}
	r.mu.RLock()
	all, err := r.idx.list(q.Caller, filter, order)
	if err != nil {
		r.mu.RUnlock()
		_ = req.Error(registryapi.CodeBadRequest, err.Error(), nil)
		return
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
	r.mu.RUnlock()
	_ = req.RespondJSON(registryapi.ListResponse{Total: len(all), Devices: page})
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

func (r *Registry) serveGet(req micro.Request) {
	var q registryapi.GetRequest
	if !decodeRequest(req, &q) {
		return
	}
	r.mu.RLock()
	d := r.lookup(q.Caller, q.DeviceID)
	var v registryapi.Device
	if d != nil {
		v = d.view()
		if q.WithContent {
			d.withContent(&v)
		}
	}
	r.mu.RUnlock()
	if d == nil {
		_ = req.Error(registryapi.CodeNotFound, "device not found", nil)
		return
	}
	_ = req.RespondJSON(v)
}

func (r *Registry) serveResource(req micro.Request) {
	var q registryapi.ResourceRequest
	if !decodeRequest(req, &q) {
		return
	}
	r.mu.RLock()
	d := r.lookup(q.Caller, q.DeviceID)
	var res *registryapi.Resource
	published := false
	if d != nil {
		published = slices.ContainsFunc(d.doc.Links, func(l ocf.Link) bool { return l.Href == q.Href })
		if t := d.twin[q.Href]; t != nil && published {
			res = &registryapi.Resource{DeviceID: q.DeviceID, Href: q.Href, Sequence: t.Sequence, Time: t.Time, Status: t.Status, ContentType: t.ContentType, Content: t.Content}
		}
	}
	r.mu.RUnlock()
	switch {
	case d == nil:
		_ = req.Error(registryapi.CodeNotFound, "device not found", nil)
	case !published:
		_ = req.Error(registryapi.CodeNotFound, "resource not published", nil)
	case res == nil:
		_ = req.Error(registryapi.CodeNotFound, "resource content not yet known", nil)
	default:
		_ = req.RespondJSON(res)
	}
}
