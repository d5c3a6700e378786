package platform

import (
	"context"
	"testing"

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
