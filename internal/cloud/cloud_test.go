package cloud

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	c := Config{Services: []string{"coap-gateway", "portal-x"}, HTTPAddr: "nonsense", CoAPAddr: "also:bad:addr", PublicURL: "ftp://x"}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{`unknown service "portal-x"`, "--http-addr", "--coap-addr", "public URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestUnusableDataDirIsAClearError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{DataDir: file, HTTPAddr: "127.0.0.1:0", CoAPAddr: "-", CoAPSAddr: "-", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("got %v, want an error naming the data dir", err)
	}
}
