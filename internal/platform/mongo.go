package platform

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// ConnectMongo connects to uri and pings the server.
func ConnectMongo(ctx context.Context, uri string) (*mongo.Client, error) {
	// A request that needs the database fails after 10 s while it is
	// unreachable, rather than holding its caller (a login, a device) longer.
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(10 * time.Second).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect mongodb: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := c.Ping(pctx, readpref.Primary()); err != nil {
		_ = c.Disconnect(context.Background())
		return nil, fmt.Errorf("ping mongodb: %w", err)
	}
	return c, nil
}
