package httpx_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

type key struct{ name string }

func TestRequestIDAndLocalsReachTheHandler(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var gotID string
	var gotLocal, gotMissing any
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotID = httpx.RequestID(r.Context())
		gotLocal, gotMissing = httpx.Local(r.Context(), key{"a"}), httpx.Local(r.Context(), key{"b"})
		w.WriteHeader(http.StatusTeapot)
	})
	// A middleware hands a value on without copying the request.
	mw := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !httpx.SetLocal(r.Context(), key{"a"}, "claims") {
			t.Error("SetLocal found no store")
		}
		inner.ServeHTTP(w, r)
	})
	h := httpx.WithRequestID(quiet, mw)

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("X-Request-Id", "trace-1")
	h.ServeHTTP(rec, req)
	if gotID != "trace-1" || rec.Header().Get("X-Request-Id") != "trace-1" || rec.Code != http.StatusTeapot {
		t.Fatalf("id %q, header %q, status %d", gotID, rec.Header().Get("X-Request-Id"), rec.Code)
	}
	if gotLocal != "claims" || gotMissing != nil {
		t.Fatalf("locals %v %v", gotLocal, gotMissing)
	}

	// An unusable client id is replaced by a fresh one, different each time.
	ids := map[string]bool{}
	for range 3 {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("X-Request-Id", "bad id with spaces")
		h.ServeHTTP(rec, req)
		id := rec.Header().Get("X-Request-Id")
		if len(id) != 16 || id != gotID {
			t.Fatalf("generated id %q, handler saw %q", id, gotID)
		}
		ids[id] = true
	}
	if len(ids) != 3 {
		t.Fatalf("ids repeat: %v", ids)
	}

	// Outside WithRequestID there is no store: callers fall back to the context.
	if httpx.SetLocal(context.Background(), key{"a"}, 1) || httpx.Local(context.Background(), key{"a"}) != nil {
		t.Fatal("a store without WithRequestID")
	}
}

func TestGzipMarksJSONAnswersWithoutSharingHeaderSlices(t *testing.T) {
	h := httpx.WithCORS([]string{"*"}, httpx.WithGzip(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		// A handler adding to the headers the middleware set must not
		// change what other requests get.
		w.Header().Add("Vary", "Accept")
		httpx.WriteJSON(w, http.StatusOK, map[string]int{"a": 1})
		w.Header().Add("Content-Encoding", "x")
	})))
	for _, origin := range []string{"", "https://app.example", ""} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		want := "Accept-Encoding Accept"
		if origin != "" {
			want = "Origin " + want
		}
		if got := rec.Header()["Vary"]; strings.Join(got, " ") != want || rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("origin %q: Vary %q, Content-Encoding %q", origin, got, rec.Header().Get("Content-Encoding"))
		}
	}
}
