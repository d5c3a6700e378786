package platform

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the driver FerretDB's SQLite backend uses
)

// idIndexer gives every table of the embedded FerretDB an index that its
// own _id lookups can use.
//
// FerretDB v1.24's SQLite backend creates a unique index on
// `_ferretdb_sjson->"_id"` but filters on `_ferretdb_sjson->'$._id'`. The
// two expressions mean the same, but SQLite only uses an index for the
// expression it was built on, so every find, update and delete by _id
// scanned the whole table and parsed each document's JSON: onboarding
// slowed down with every device already onboarded. This adds an index on
// the expression FerretDB queries with, for each collection, when FerretDB
// starts and for collections created later.
type idIndexer struct {
	dir  string
	log  *slog.Logger
	mu   sync.Mutex
	done map[string]bool    // "<file>/<table>" already indexed
	dbs  map[string]*sql.DB // open database files, kept between passes
}

// idIndexName is the name of the index this adds to table.
func idIndexName(table string) string { return table + "__id_lookup" }

// indexAll adds the missing indexes in every database file of dir.
func (x *idIndexer) indexAll(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(x.dir, "*.sqlite"))
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, file := range files {
		if err := x.indexFile(ctx, file); err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(file), err)
		}
	}
	return nil
}

func (x *idIndexer) indexFile(ctx context.Context, file string) error {
	db := x.dbs[file]
	if db == nil {
		var err error
		if db, err = sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)"); err != nil {
			return err
		}
		db.SetMaxOpenConns(1)
		x.dbs[file] = db
	}
	rows, err := db.QueryContext(ctx, `SELECT table_name FROM _ferretdb_collections`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // a database FerretDB has not set up yet
		}
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		if !x.done[file+"/"+t] {
			tables = append(tables, t)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, idIndexName(t), t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped meanwhile
			}
			return err
		}
		x.done[file+"/"+t] = true
		x.log.Debug("ferretdb _id index added", "table", t)
	}
	return nil
}

// close closes the database files the passes opened.
func (x *idIndexer) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for file, db := range x.dbs {
		_ = db.Close()
		delete(x.dbs, file)
	}
}

// keep adds indexes for new collections every interval until ctx ends.
func (x *idIndexer) keep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := x.indexAll(ctx); err != nil && ctx.Err() == nil {
				x.log.Warn("ferretdb _id index", "err", err)
			}
		}
	}
}
