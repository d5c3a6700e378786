package httpx

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

type requestIDKey struct{}

// RequestID returns the request id that WithRequestID put on ctx.
func RequestID(ctx context.Context) string {
	if st, ok := ctx.Value(requestIDKey{}).(*requestState); ok {
		return st.id
	}
	return ""
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// requestState is what WithRequestID keeps for one request, in a single
// allocation: the response writer wrapper, the id (on the context as this
// pointer, which boxes without allocating), the header value and the
// request's locals (SetLocal).
type requestState struct {
	statusWriter
	id       string
	idHeader [1]string
	locals   [maxLocals]local
}

type local struct{ key, val any }

// maxLocals is how many values SetLocal keeps per request; authentication
// needs one.
const maxLocals = 2

// SetLocal stores val under key (a comparable value, as for
// context.WithValue) in the request's store that WithRequestID put on ctx,
// so a middleware hands a value to the handlers after it without copying
// the request (r.WithContext copies all of it). It reports false when ctx
// has no store or the store is full; the caller then uses
// context.WithValue. Only the goroutine serving the request may call it,
// before it calls the next handler.
func SetLocal(ctx context.Context, key, val any) bool {
	st, ok := ctx.Value(requestIDKey{}).(*requestState)
	if !ok {
		return false
	}
	for i := range st.locals {
		if l := &st.locals[i]; l.key == nil || l.key == key {
			l.key, l.val = key, val
			return true
		}
	}
	return false
}

// Local returns the value SetLocal stored under key on ctx's request, or nil.
func Local(ctx context.Context, key any) any {
	st, ok := ctx.Value(requestIDKey{}).(*requestState)
	if !ok {
		return nil
	}
	for _, l := range st.locals {
		if l.key == key {
			return l.val
		}
	}
	return nil
}

// WithRequestID gives every request an id (the client's X-Request-Id when it
// is sane, else a new one), echoes it in the response and logs the request
// with it. Query strings are not logged: they never carry tokens here, but
// they may carry personal data.
func WithRequestID(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			var b [8]byte
			var h [16]byte
			_, _ = rand.Read(b[:])
			hex.Encode(h[:], b[:])
			id = string(h[:])
		}
		st := &requestState{statusWriter: statusWriter{ResponseWriter: w, status: http.StatusOK}, id: id}
		st.idHeader[0] = id
		// Assigned, not Set: the key is canonical already, and the value
		// slice is part of st. Its capacity is 1, so an Add copies it.
		w.Header()["X-Request-Id"] = st.idHeader[:]
		start := time.Now()
		next.ServeHTTP(&st.statusWriter, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, st)))
		// Checked first: the arguments would cost allocations even when
		// the line is not written.
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug("http", "request_id", id, "method", r.Method, "path", r.URL.Path, "status", st.status, "took", time.Since(start))
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// WithCORS answers CORS preflights and marks responses for the allowed
// origins ("*" allows any). Credentials are not allowed: the API takes
// Bearer tokens, not cookies.
func WithCORS(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	any := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && (any || slices.Contains(origins, origin)) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "Link, X-Total-Count, X-Request-Id, ETag, OCF-Status, Retry-After, WWW-Authenticate")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, If-None-Match, X-Request-Id")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

var gzipPool = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// Shared header values of WithGzip, assigned instead of Add and Set, which
// allocate a slice for each request. Their capacity is 1: an Add copies.
var (
	varyAcceptEncoding  = []string{"Accept-Encoding"}
	contentEncodingGzip = []string{"gzip"}
)

// WithGzip compresses JSON answers for clients that accept gzip.
func WithGzip(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		if v := h["Vary"]; len(v) == 0 {
			h["Vary"] = varyAcceptEncoding
		} else {
			h["Vary"] = append(v, "Accept-Encoding")
		}
		gw := &gzipWriter{ResponseWriter: w}
		defer gw.close()
		next.ServeHTTP(gw, r)
	})
}

// gzipWriter decides at WriteHeader whether to compress: only JSON bodies.
type gzipWriter struct {
	http.ResponseWriter
	zw      *gzip.Writer
	decided bool
}

func (g *gzipWriter) WriteHeader(code int) {
	if !g.decided {
		g.decided = true
		h := g.Header()
		ct := h.Get("Content-Type")
		if code != http.StatusNoContent && code != http.StatusNotModified && h.Get("Content-Encoding") == "" &&
			(strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/problem+json")) {
			h["Content-Encoding"] = contentEncodingGzip
			h.Del("Content-Length")
			g.zw = gzipPool.Get().(*gzip.Writer)
			g.zw.Reset(g.ResponseWriter)
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if !g.decided {
		g.WriteHeader(http.StatusOK)
	}
	if g.zw != nil {
		return g.zw.Write(b)
	}
	return g.ResponseWriter.Write(b)
}

func (g *gzipWriter) close() {
	if g.zw != nil {
		_ = g.zw.Close()
		gzipPool.Put(g.zw)
	}
}

func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
