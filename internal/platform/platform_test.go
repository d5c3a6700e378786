package platform

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestEmbeddedServersAcceptClients(t *testing.T) {
	db := TestMongo(t)
	ctx := context.Background()
	if _, err := db.Collection("probe").InsertOne(ctx, bson.M{"_id": "a", "v": 1}); err != nil {
		t.Fatal(err)
	}
	var got bson.M
	if err := db.Collection("probe").FindOne(ctx, bson.M{"_id": "a"}).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["v"] != int32(1) {
		t.Fatalf("got %v", got)
	}

	nc, err := nats.Connect(TestNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
}

// A stream's write error (as nats-server logs it) marks the store
// unwritable; the keeper restarts JetStream once the store dir has
// MinFreeDisk free, and the streams take messages again with what they
// held before.
func TestEmbeddedNATSRestartsJetStreamAfterAWriteError(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		minFree uint64
		restart bool
	}{
		{"room on the disk", 1, true},
		{"the disk still full", 1 << 62, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if _, ok := freeBytes(dir); !ok && !c.restart {
				t.Skip("no free-space figure on this system: the keeper does not wait for one")
			}
			n, err := StartNATS(NATSOptions{StoreDir: dir, MinFreeDisk: c.minFree})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Shutdown()
			nc, err := nats.Connect(n.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := nc.JetStream()
			if _, err := js.AddStream(&nats.StreamConfig{Name: "S", Subjects: []string{"s"}, Storage: nats.FileStorage}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish("s", []byte("before")); err != nil {
				t.Fatal(err)
			}
			if !n.StoreWritable() {
				t.Fatal("not writable at start")
			}
			n.srv.Errorf("JetStream stream '%s > %s' critical write error: %v", "$G", "S", syscall.ENOSPC)
			if n.StoreWritable() {
				t.Fatal("a write error did not make the store unwritable")
			}
			deadline := time.Now().Add(5 * storeCheckEvery)
			for !n.StoreWritable() && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if !c.restart {
				if n.StoreWritable() {
					t.Fatal("JetStream restarted without MinFreeDisk free")
				}
				return
			}
			if !n.StoreWritable() {
				t.Fatal("JetStream not restarted")
			}
			var ack *nats.PubAck
			for ack == nil && time.Now().Before(deadline.Add(10*time.Second)) {
				ack, _ = js.Publish("s", []byte("after"))
			}
			if ack == nil || ack.Sequence != 2 {
				t.Fatalf("publish after the restart: %+v", ack)
			}
		})
	}
}
