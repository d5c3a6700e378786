package platform

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// queryPlan is SQLite's plan for the statement FerretDB runs for a find by
// _id on collection coll of database ocfcloud in dir.
func queryPlan(t *testing.T, dir, coll string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "ocfcloud.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var table string
	if err := db.QueryRow(`SELECT table_name FROM _ferretdb_collections WHERE name = ?`, coll).Scan(&table); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(fmt.Sprintf(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM %q WHERE _ferretdb_sjson->'$._id' = ?`, table), `"k-1"`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

// TestFerretFindsByIDWithAnIndex: the statement FerretDB runs for a find
// by _id searches an index instead of scanning the table, for collections
// that exist at start and for ones created later.
func TestFerretFindsByIDWithAnIndex(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	start := func() (*Ferret, func()) {
		f, err := StartFerret(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ConnectMongo(ctx, f.URI())
		if err != nil {
			t.Fatal(err)
		}
		return f, func() { _ = c.Disconnect(ctx); f.Shutdown() }
	}
	f, stop := start()
	c, err := ConnectMongo(ctx, f.URI())
	if err != nil {
		t.Fatal(err)
	}
	db := c.Database("ocfcloud")
	for i := range 50 {
		if _, err := db.Collection("things").InsertOne(ctx, bson.M{"_id": fmt.Sprintf("k-%d", i), "n": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.IndexIDs(ctx); err != nil {
		t.Fatal(err)
	}
	if plan := queryPlan(t, dir, "things"); !strings.Contains(plan, "USING INDEX") || !strings.Contains(plan, "__id_lookup") {
		t.Fatalf("find by _id after IndexIDs: %s", plan)
	}
	var got bson.M
	if err := db.Collection("things").FindOne(ctx, bson.M{"_id": "k-7"}).Decode(&got); err != nil || got["n"] != int32(7) {
		t.Fatalf("find by _id: %v %v", got, err)
	}
	_ = c.Disconnect(ctx)
	stop()

	// A collection created before a restart is indexed at start.
	f, stop = start()
	c, err = ConnectMongo(ctx, f.URI())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Database("ocfcloud").Collection("later").InsertOne(ctx, bson.M{"_id": "k-1"}); err != nil {
		t.Fatal(err)
	}
	_ = c.Disconnect(ctx)
	stop()
	_, stop = start()
	defer stop()
	if plan := queryPlan(t, dir, "later"); !strings.Contains(plan, "__id_lookup") {
		t.Fatalf("collection created before the restart: %s", plan)
	}
}
