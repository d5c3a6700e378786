package registrybench

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	registry "github.com/ocfcloud/ocfcloud/device-registry"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/platform"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// Options configure a run.
type Options struct {
	Devices int // devices the events are spread over; default 1,000
	Events  int // resource_changed events in the throughput run; default 100,000
	// Rate is the offered rate of the latency run; default 2,000/s for 5 s.
	Rate float64
	// StartupDevices is the size of the registry whose start-up time is
	// measured (device documents plus one twin entry each); default 100,000,
	// 0 skips with -1.
	StartupDevices int
}

// Run prints a Markdown table to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	if o.Devices <= 0 {
		o.Devices = 1000
	}
	if o.Events <= 0 {
		o.Events = 100000
	}
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	if o.StartupDevices == 0 {
		o.StartupDevices = 100000
	}
	dir, err := os.MkdirTemp("", "ocfcloud-bench-registry-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	n, err := platform.StartNATS(platform.NATSOptions{StoreDir: dir + "/nats"})
	if err != nil {
		return err
	}
	defer n.Shutdown()
	f, err := platform.StartFerret(dir+"/db", nil)
	if err != nil {
		return err
	}
	defer f.Shutdown()
	mc, err := platform.ConnectMongo(ctx, f.URI())
	if err != nil {
		return err
	}
	defer mc.Disconnect(context.Background())
	nc, err := nats.Connect(n.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	var applied atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration
	measuring := atomic.Bool{}
	r, err := registry.New(ctx, registry.Config{NATS: nc, DB: mc.Database("bench"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnApplied: func(e *events.Envelope) {
			if e.Type != events.ResourceChanged {
				return
			}
			applied.Add(1)
			if measuring.Load() {
				d := time.Since(e.Time)
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		}})
	if err != nil {
		return err
	}
	defer r.Close()
	pub := events.NewPublisher(js)
	seq := events.NewSequencer(nil)
	ids := make([]string, o.Devices)
	links, _ := json.Marshal(events.ResourcesPublishedContent{Links: []ocf.Link{{Href: "/light/1", RT: []string{"core.light"}, Policy: &ocf.Policy{BitMask: 3}}}})
	fmt.Fprintf(out, "setting up %d devices\n", o.Devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if err := pub.Publish(ctx, &events.Envelope{DeviceID: ids[i], Owner: "bench", Type: events.ResourcesPublished, Sequence: seq.Next(), Time: time.Now().UTC(), ContentType: events.ContentTypeJSON, Content: links}); err != nil {
			return err
		}
	}
	cli := registryapi.NewClient(nc)
	for deadline := time.Now().Add(5 * time.Minute); ; {
		l, err := cli.List(ctx, registryapi.ListRequest{Caller: registryapi.Caller{Admin: true}, Limit: 1})
		if err == nil && l.Total == o.Devices {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devices not registered after 5 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}

	content, _ := ocf.Marshal(map[string]any{"state": true, "power": 42, "name": "bench"})
	event := func(i int) *events.Envelope {
		return &events.Envelope{DeviceID: ids[i%len(ids)], Owner: "bench", Type: events.ResourceChanged, Sequence: seq.Next(), Time: time.Now().UTC(),
			Href: "/light/1", Status: 200, ContentType: events.ContentTypeOCFCBOR, Content: content}
	}

	// Throughput: publish as a gateway fleet would (async, acked), count
	// until the registry has applied every event.
	fmt.Fprintf(out, "publishing %d resource_changed events\n", o.Events)
	start := time.Now()
	base := applied.Load()
	for i := range o.Events {
		e := event(i)
		data, _ := events.Encode(e)
		if _, err := js.PublishAsync(e.Subject(), data, jetstream.WithMsgID(e.MsgID())); err != nil {
			return err
		}
		if i%1024 == 1023 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	published := time.Since(start)
	for applied.Load()-base < int64(o.Events) {
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("only %d of %d events applied after 10 minutes", applied.Load()-base, o.Events)
		}
		time.Sleep(5 * time.Millisecond)
	}
	total := time.Since(start)

	// Latency at a steady offered rate: publish time to applied time.
	measuring.Store(true)
	interval := time.Duration(float64(time.Second) / o.Rate)
	count := int(5 * o.Rate)
	base = applied.Load()
	next := time.Now()
	for i := range count {
		next = next.Add(interval)
		time.Sleep(time.Until(next))
		e := event(i)
		data, _ := events.Encode(e)
		if _, err := js.PublishAsync(e.Subject(), data, jetstream.WithMsgID(e.MsgID())); err != nil {
			return err
		}
	}
	<-js.PublishAsyncComplete()
	for applied.Load()-base < int64(count) {
		time.Sleep(5 * time.Millisecond)
	}
	measuring.Store(false)
	latMu.Lock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	latMu.Unlock()

	var startup time.Duration
	if o.StartupDevices > 0 {
		r.Close()
		fmt.Fprintf(out, "filling a registry with %d devices for the start-up run\n", o.StartupDevices)
		if startup, err = measureStartup(ctx, js, mc.Database("startup"), o.StartupDevices, content); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "\nmachine: %d CPUs, %s/%s, %s; embedded NATS (file store) and FerretDB in the same process\n\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintln(out, "| run | figure | note |")
	fmt.Fprintln(out, "|---|---:|---|")
	fmt.Fprintf(out, "| publish %d events to JetStream (async, acked) | %.0f events/s | the input rate, the ceiling for the registry |\n", o.Events, float64(o.Events)/published.Seconds())
	fmt.Fprintf(out, "| publish → applied to the durable twin, %d devices | %.0f events/s | %.0f %% of the publish rate; target ≥ 20,000/s |\n", o.Devices, float64(o.Events)/total.Seconds(), 100*published.Seconds()/total.Seconds())
	fmt.Fprintf(out, "| latency publish → applied at %.0f events/s | p50 %s, p99 %s | |\n", o.Rate, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
	if startup > 0 {
		fmt.Fprintf(out, "| registry start-up with %d devices (documents + twin entries loaded into memory) | %s | |\n", o.StartupDevices, startup.Round(time.Millisecond))
	}
	return nil
}

// measureStartup writes n device documents and twin entries the way the
// registry stores them, then times a registry start until it serves.
func measureStartup(ctx context.Context, js jetstream.JetStream, db *mongo.Database, n int, content []byte) (time.Duration, error) {
	links := []ocf.Link{{Href: "/light/1", RT: []string{"core.light"}, Policy: &ocf.Policy{BitMask: 3}}}
	const chunk = 1000
	for i := 0; i < n; i += chunk {
		docs := make([]any, 0, chunk)
		for j := i; j < min(i+chunk, n); j++ {
			docs = append(docs, bson.M{"_id": fmt.Sprintf("10000000-0000-4000-8000-%012d", j), "owner": "bench", "registered_at": time.Now().UTC(), "registered_seq": int64(1), "links": links, "links_seq": int64(1)})
		}
		if _, err := db.Collection("devices").InsertMany(ctx, docs); err != nil {
			return 0, err
		}
	}
	// The twin bucket is shared; the registry also loads the first run's
	// entries, which only makes this figure more conservative.
	twin, _ := json.Marshal(map[string]any{"seq": 1, "contentType": events.ContentTypeOCFCBOR, "content": content})
	for i := range n {
		key := fmt.Sprintf("10000000-0000-4000-8000-%012d", i) + "." + base64.RawURLEncoding.EncodeToString([]byte("/light/1"))
		if _, err := js.PublishAsync("$KV.OCFCLOUD_TWIN."+key, twin); err != nil {
			return 0, err
		}
		if i%1024 == 1023 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	nc := js.Conn()
	start := time.Now()
	r, err := registry.New(ctx, registry.Config{NATS: nc, DB: db, Consumer: "startup-bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return 0, err
	}
	took := time.Since(start)
	r.Close()
	return took, nil
}
