package tokenbench

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRunPrintsTheTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts FerretDB and loads it")
	}
	var out stringsWriter
	err := Run(context.Background(), Options{Workers: 4, Duration: 300 * time.Millisecond, DataDir: t.TempDir()}, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ceiling", "client_credentials", "refresh_token", "| run |"} {
		if !contains(out.s, want) {
			t.Errorf("output lacks %q:\n%s", want, out.s)
		}
	}
	if contains(out.s, "first error") {
		t.Errorf("errors in the run:\n%s", out.s)
	}
}

func BenchmarkClientCredentialsGrant(b *testing.B) {
	e, err := Start(context.Background(), Options{Workers: 64, DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := e.ClientCredentials(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRefreshTokenGrant(b *testing.B) {
	e, err := Start(context.Background(), Options{Workers: 1, DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	if err := e.PrepareRefresh(1); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := e.Refresh(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
	}
}

type stringsWriter struct{ s string }

func (w *stringsWriter) Write(p []byte) (int, error) { w.s += string(p); return len(p), nil }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
