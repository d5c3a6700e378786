package platform

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Ferret is an embedded FerretDB on SQLite files.
type Ferret struct {
	uri     string
	cancel  context.CancelFunc
	done    chan struct{}
	ids     *idIndexer
	keeping chan struct{} // closed when the index keeper stopped
}

// StartFerret starts FerretDB with its SQLite files in dir, listening on a
// random loopback port. Only FerretDB's errors reach log: it reports routine
// driver chatter (unknown commands such as endSessions) as warnings.
func StartFerret(dir string, log *slog.Logger) (*Ferret, error) {
	return StartFerretOn("127.0.0.1:0", dir, log)
}

// StartFerretOn is StartFerret listening on addr (host:port).
func StartFerretOn(addr, dir string, log *slog.Logger) (*Ferret, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded ferretdb: %w", err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
		Logger:    slog.New(levelFilter{log.Handler(), slog.LevelError}),
	})
	if err != nil {
		return nil, fmt.Errorf("embedded ferretdb: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fd := &Ferret{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(fd.done)
		if err := f.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("embedded ferretdb stopped", "err", err)
		}
	}()
	uriCh := make(chan string, 1)
	go func() { uriCh <- f.MongoDBURI() }()
	select {
	case fd.uri = <-uriCh:
	case <-time.After(10 * time.Second):
		cancel()
		return nil, fmt.Errorf("embedded ferretdb: not listening after 10s")
	}
	fd.ids = &idIndexer{dir: dir, log: log, done: map[string]bool{}, dbs: map[string]*sql.DB{}}
	if err := fd.ids.indexAll(ctx); err != nil {
		log.Warn("ferretdb _id index", "err", err)
	}
	fd.keeping = make(chan struct{})
	go func() {
		defer close(fd.keeping)
		fd.ids.keep(ctx, 2*time.Second)
	}()
	return fd, nil
}

// IndexIDs adds the _id index (see idIndexer) to collections created since
// the last pass; a background pass runs every 2 s as well.
func (f *Ferret) IndexIDs(ctx context.Context) error { return f.ids.indexAll(ctx) }

// URI is the MongoDB connection string of the server.
func (f *Ferret) URI() string { return f.uri }

// Shutdown stops FerretDB and waits until its files are closed.
func (f *Ferret) Shutdown() {
	f.cancel()
	<-f.keeping
	f.ids.close()
	<-f.done
}

// levelFilter drops records below min; FerretDB logs every connection at info.
type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (l levelFilter) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}

func (l levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{l.Handler.WithAttrs(a), l.min}
}

func (l levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{l.Handler.WithGroup(n), l.min}
}
