package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// deviceDoc is a device document in MongoDB.
type deviceDoc struct {
	ID            string     `bson:"_id"`
	Owner         string     `bson:"owner"`
	RegisteredAt  time.Time  `bson:"registered_at"`
	RegisteredSeq uint64     `bson:"registered_seq"`
	Links         []ocf.Link `bson:"links"`
	LinksSeq      uint64     `bson:"links_seq"`
	// UnregisteredSeq marks a forgotten device (a tombstone): events older
	// than a newer registration are ignored, so a late event cannot bring
	// an offboarded device back.
	UnregisteredSeq uint64 `bson:"unregistered_seq,omitempty"`
}

// twinValue is one resource's content in the twin KV bucket.
type twinValue struct {
	Sequence    uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	Status      int       `json:"status,omitempty"`
	ContentType string    `json:"contentType"`
	Content     []byte    `json:"content"`
}

// onlineValue is a device's connection state in the online KV bucket.
type onlineValue struct {
	Online   bool      `json:"online"`
	Since    time.Time `json:"since"`
	Sequence uint64    `json:"seq"`
	// Gateway is the instance holding the connection; its lease keeps the
	// device online.
	Gateway string `json:"gateway,omitempty"`
}

const (
	devicesCollection = "devices"
	twinBucket        = "OCFCLOUD_TWIN"
	onlineBucket      = "OCFCLOUD_ONLINE"
)

// store is the durable home of registry state.
type store struct {
	js      jetstream.JetStream
	devices *mongo.Collection
	twin    jetstream.KeyValue
	online  jetstream.KeyValue
}

func openStore(ctx context.Context, db *mongo.Database, js jetstream.JetStream, replicas int, memory bool) (*store, error) {
	coll := db.Collection(devicesCollection)
	if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "owner", Value: 1}, {Key: "_id", Value: 1}},
	}); err != nil {
		return nil, fmt.Errorf("devices index: %w", err)
	}
	if replicas == 0 {
		replicas = 1
	}
	storage := jetstream.FileStorage
	if memory {
		storage = jetstream.MemoryStorage
	}
	twin, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: twinBucket, History: 1, Storage: storage, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("twin bucket: %w", err)
	}
	online, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: onlineBucket, History: 1, Storage: storage, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("online bucket: %w", err)
	}
	return &store{js: js, devices: coll, twin: twin, online: online}, nil
}

// twinKey is "<di>.<base64url(href)>": hrefs may hold characters that KV keys
// do not allow.
func twinKey(deviceID, href string) string {
	return deviceID + "." + base64.RawURLEncoding.EncodeToString([]byte(href))
}

func parseTwinKey(key string) (deviceID, href string, err error) {
	di, enc, ok := strings.Cut(key, ".")
	if !ok {
		return "", "", fmt.Errorf("twin key %q", key)
	}
	h, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", "", fmt.Errorf("twin key %q: %w", key, err)
	}
	return di, string(h), nil
}

func (s *store) saveDevice(ctx context.Context, d *deviceDoc) error {
	_, err := s.devices.ReplaceOne(ctx, bson.M{"_id": d.ID}, d, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("save device %s: %w", d.ID, err)
	}
	return nil
}

// put creates or replaces a device document.
func (s *store) put(ctx context.Context, d *deviceDoc, isNew bool) error {
	if isNew {
		return s.createDevice(ctx, d)
	}
	return s.saveDevice(ctx, d)
}

// createDevice writes the document of a device the registry has not seen.
// An insert costs one index lookup, where the embedded FerretDB runs an
// upsert as a scan of the collection; a document that exists after all (a
// replayed event after a crash) is replaced.
func (s *store) createDevice(ctx context.Context, d *deviceDoc) error {
	if _, err := s.devices.InsertOne(ctx, d); err == nil {
		return nil
	} else if !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("create device %s: %w", d.ID, err)
	}
	return s.saveDevice(ctx, d)
}

// forgetDevice replaces the device's document with its tombstone and drops
// its twin and online state.
func (s *store) forgetDevice(ctx context.Context, tomb *deviceDoc, hrefs []string) error {
	if err := s.saveDevice(ctx, tomb); err != nil {
		return err
	}
	deviceID := tomb.ID
	for _, h := range hrefs {
		if err := s.twin.Purge(ctx, twinKey(deviceID, h)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("delete twin %s%s: %w", deviceID, h, err)
		}
	}
	if err := s.online.Purge(ctx, deviceID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete online %s: %w", deviceID, err)
	}
	return nil
}

func (s *store) saveTwin(ctx context.Context, deviceID, href string, v *twinValue) error {
	data, _ := json.Marshal(v)
	if _, err := s.twin.Put(ctx, twinKey(deviceID, href), data); err != nil {
		return fmt.Errorf("save twin %s%s: %w", deviceID, href, err)
	}
	return nil
}

// putTwinAsync writes a twin value without waiting: a KV put is a publish
// on the bucket's subject, so many can be in flight at once.
func (s *store) putTwinAsync(key string, v *twinValue) (jetstream.PubAckFuture, error) {
	data, _ := json.Marshal(v)
	return s.js.PublishAsync("$KV."+twinBucket+"."+key, data)
}

func (s *store) saveOnline(ctx context.Context, deviceID string, v *onlineValue) error {
	data, _ := json.Marshal(v)
	if _, err := s.online.Put(ctx, deviceID, data); err != nil {
		return fmt.Errorf("save online %s: %w", deviceID, err)
	}
	return nil
}

// load reads every durable record into a fresh index. The database and the
// two buckets are read at the same time; start-up takes as long as the
// slowest of them.
func (s *store) load(ctx context.Context) (*index, error) {
	idx := newIndex()
	twins := map[string]map[string]*twinValue{}
	online := map[string]onlineValue{}
	var g errgroup.Group
	g.Go(func() error {
		cur, err := s.devices.Find(ctx, bson.M{}, options.Find().SetBatchSize(5000))
		if err != nil {
			return fmt.Errorf("load devices: %w", err)
		}
		defer cur.Close(ctx)
		for cur.Next(ctx) {
			var d deviceDoc
			if err := cur.Decode(&d); err != nil {
				return fmt.Errorf("load devices: %w", err)
			}
			idx.devices[d.ID] = &device{doc: d}
		}
		if err := cur.Err(); err != nil {
			return fmt.Errorf("load devices: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		return loadBucket(ctx, s.twin, func(key string, data []byte) error {
			di, href, err := parseTwinKey(key)
			if err != nil {
				return err
			}
			var v twinValue
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("twin %s: %w", key, err)
			}
			if twins[di] == nil {
				twins[di] = map[string]*twinValue{}
			}
			twins[di][href] = &v
			return nil
		})
	})
	g.Go(func() error {
		return loadBucket(ctx, s.online, func(key string, data []byte) error {
			var v onlineValue
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("online %s: %w", key, err)
			}
			online[key] = v
			return nil
		})
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// Twin and online entries of devices that have no document (deleted
	// while the registry was down) are left out.
	for di, d := range idx.devices {
		d.twin = twins[di]
		if d.twin == nil {
			d.twin = map[string]*twinValue{}
		}
		d.online = online[di]
	}
	return idx, nil
}

func loadBucket(ctx context.Context, kv jetstream.KeyValue, fn func(key string, data []byte) error) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("load %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // initial values done
				return nil
			}
			if err := fn(e.Key(), e.Value()); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
