package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

const collAudit = "audit"

// Audit event types.
const (
	AuditLogin             = "login"
	AuditLoginFailed       = "login_failed"
	AuditClientAuthFailed  = "client_auth_failed"
	AuditGrant             = "grant"
	AuditRevocation        = "revocation"
	AuditAppCreated        = "app_created"
	AuditAppUpdated        = "app_updated"
	AuditAppDeleted        = "app_deleted"
	AuditAppSecretRevealed = "app_secret_revealed"
	AuditAppSecretRotated  = "app_secret_rotated"
	AuditUserCreated       = "user_created"
	AuditUserUpdated       = "user_updated"
)

// AuditEvent is one entry of the audit log. Identical events within one flush
// window (a second) are stored once with Count, so a client hammering the
// token endpoint costs one document per second, not one per request.
type AuditEvent struct {
	ID       string    `bson:"_id" json:"id"`
	Time     time.Time `bson:"time" json:"time"`
	Type     string    `bson:"type" json:"type"`
	Success  bool      `bson:"success" json:"success"`
	UserID   string    `bson:"user_id,omitempty" json:"userId,omitempty"`   // whom it is about
	ActorID  string    `bson:"actor_id,omitempty" json:"actorId,omitempty"` // who did it, if a person
	ClientID string    `bson:"client_id,omitempty" json:"clientId,omitempty"`
	TokenID  string    `bson:"token_id,omitempty" json:"tokenId,omitempty"`
	SourceIP string    `bson:"source_ip,omitempty" json:"sourceIp,omitempty"`
	Detail   string    `bson:"detail,omitempty" json:"detail,omitempty"`
	Count    int       `bson:"count" json:"count"`
}

func (e AuditEvent) key() string {
	return fmt.Sprintf("%s|%t|%s|%s|%s|%s|%s|%s", e.Type, e.Success, e.UserID, e.ActorID, e.ClientID, e.TokenID, e.SourceIP, e.Detail)
}

const (
	auditFlushEvery = time.Second
	auditMaxPending = 10000
)

// auditLog buffers events in memory and writes them in batches, off the
// request path; FerretDB manages a few thousand inserts a second, far less
// than the token endpoint's rate.
type auditLog struct {
	coll *mongo.Collection
	log  *slog.Logger

	mu      sync.Mutex
	pending []AuditEvent
	index   map[string]int // key -> position in pending
	dropped int

	flushMu sync.Mutex // one flush at a time, in order
	stop    chan struct{}
	done    chan struct{}
}

func newAuditLog(coll *mongo.Collection, log *slog.Logger) *auditLog {
	a := &auditLog{coll: coll, log: log, index: make(map[string]int), stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *auditLog) run() {
	defer close(a.done)
	t := time.NewTicker(auditFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			a.flush(ctx)
			cancel()
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			a.flush(ctx)
			cancel()
		}
	}
}

func (a *auditLog) close() {
	close(a.stop)
	<-a.done
}

// record queues e; Time must be set.
func (a *auditLog) record(e AuditEvent) {
	e.Time = e.Time.UTC().Truncate(time.Millisecond)
	k := e.key()
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, ok := a.index[k]; ok {
		a.pending[i].Count++
		return
	}
	if len(a.pending) >= auditMaxPending {
		a.dropped++
		return
	}
	e.ID = auditID(e.Time)
	e.Count = 1
	a.index[k] = len(a.pending)
	a.pending = append(a.pending, e)
}

// flush writes what is pending. A failed batch is put back once, in front
// of newer events, unless the buffer is full.
func (a *auditLog) flush(ctx context.Context) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	batch, dropped := a.pending, a.dropped
	a.pending, a.dropped = nil, 0
	clear(a.index)
	a.mu.Unlock()
	if dropped > 0 {
		a.log.WarnContext(ctx, "audit events dropped, buffer full", "dropped", dropped)
	}
	if len(batch) == 0 {
		return
	}
	docs := make([]any, len(batch))
	for i := range batch {
		docs[i] = batch[i]
	}
	if _, err := a.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil && !mongo.IsDuplicateKeyError(err) {
		a.log.ErrorContext(ctx, "write audit events failed", "events", len(batch), "err", err)
		a.mu.Lock()
		if len(a.pending)+len(batch) <= auditMaxPending {
			a.pending = append(batch, a.pending...)
			clear(a.index)
			for i, e := range a.pending {
				a.index[e.key()] = i
			}
		} else {
			a.dropped += len(batch)
		}
		a.mu.Unlock()
	}
}

// auditID sorts by time: 16 hex digits of Unix nanoseconds, then randomness.
func auditID(t time.Time) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x", uint64(t.UnixNano())) + hex.EncodeToString(r[:])
}

// audit records an event at the server's time.
func (s *Server) audit(e AuditEvent) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	s.auditLog.record(e)
}

const (
	auditPageDefault = 100
	auditPageMax     = 500
)

// handleAudit lists audit events, newest first, for administrators. Query:
// type, userId, clientId, limit (1..500, default 100), before (an event id,
// for the next page, which the Link header names).
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	q := r.URL.Query()
	limit := auditPageDefault
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > auditPageMax {
			httpx.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", auditPageMax))
			return
		}
		limit = n
	}
	filter := bson.M{}
	for param, field := range map[string]string{"type": "type", "userId": "user_id", "clientId": "client_id"} {
		if v := q.Get(param); v != "" {
			filter[field] = v
		}
	}
	if v := q.Get("before"); v != "" {
		filter["_id"] = bson.M{"$lt": v}
	}
	// Read your own writes: whatever this process has buffered goes first.
	s.auditLog.flush(ctx)
	cur, err := s.auditColl.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(int64(limit)))
	if err != nil {
		s.problemInternal(w, r, "list audit events", err)
		return
	}
	events := []AuditEvent{}
	if err := cur.All(ctx, &events); err != nil {
		s.problemInternal(w, r, "list audit events", err)
		return
	}
	if len(events) == limit {
		next := *r.URL
		nq := next.Query()
		nq.Set("before", events[len(events)-1].ID)
		next.RawQuery = nq.Encode()
		w.Header().Set("Link", fmt.Sprintf("<%s%s>; rel=\"next\"", s.cfg.Issuer, next.RequestURI()))
	}
	httpx.WriteJSON(w, http.StatusOK, events)
}

// problemInternal logs err and answers without details: 503 with
// Retry-After when the database cannot be reached, so clients retry as they
// do at the token endpoint, and 500 otherwise.
func (s *Server) problemInternal(w http.ResponseWriter, r *http.Request, what string, err error) {
	attrs := []any{"err", err}
	if c := auth.FromContext(r.Context()); c != nil {
		attrs = append(attrs, "user_id", c.Subject)
	}
	s.log.ErrorContext(r.Context(), what+" failed", attrs...)
	if storageUnavailable(err) {
		writeStorageOutage(w)
		return
	}
	httpx.WriteProblem(w, http.StatusInternalServerError, "internal error, try again later")
}

// writeStorageOutage is the REST form of storageOutage: problem JSON, 503,
// Retry-After.
func writeStorageOutage(w http.ResponseWriter) {
	setStorageRetryAfter(w)
	httpx.WriteProblem(w, http.StatusServiceUnavailable, "the authorization server cannot reach its storage; retry shortly")
}
