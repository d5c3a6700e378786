package platform

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestMongo starts an embedded FerretDB in a temporary directory and returns a
// database on it; everything is stopped when the test ends. It is for tests
// of the Mongo stores, which must talk to a real wire-protocol server.
func TestMongo(t testing.TB) *mongo.Database {
	t.Helper()
	f, err := StartFerret(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Shutdown)
	c, err := ConnectMongo(context.Background(), f.URI())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database("ocfcloud")
}

// TestNATS starts an embedded nats-server with JetStream for a test and
// returns its URL.
func TestNATS(t testing.TB) string {
	t.Helper()
	n, err := StartNATS(NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n.URL()
}
