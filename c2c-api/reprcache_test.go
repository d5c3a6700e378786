package c2capi

import (
	"bytes"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

func TestRepresentationCacheIsKeyedByContentAndBounded(t *testing.T) {
	var c reprCache
	conversions := 0
	conv := func(b []byte) ([]byte, error) { conversions++; return ocf.CBORToJSON(b) }
	a, _ := ocf.Marshal(map[string]any{"power": 5})
	b, _ := ocf.Marshal(map[string]any{"power": 6})

	e1, err := c.get(a, conv)
	if err != nil || string(e1.json) != `{"power":5}` {
		t.Fatalf("%s %v", e1.json, err)
	}
	// The same bytes, another slice: converted once.
	if e2, _ := c.get(bytes.Clone(a), conv); e2 != e1 || conversions != 1 {
		t.Fatalf("second read converted again (%d)", conversions)
	}
	if e3, _ := c.get(b, conv); string(e3.json) != `{"power":6}` {
		t.Fatalf("other content: %s", e3.json)
	}
	if _, err := c.get([]byte{0xff}, conv); err == nil {
		t.Fatal("invalid CBOR converted")
	}

	// Twin headers follow sequence and time, never another twin's.
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h1 := e1.headers(36, at)
	if h1.etag != `"10"` || h1.lastModified[0] != "Fri, 02 Jan 2026 03:04:05 GMT" || e1.headers(36, at) != h1 {
		t.Fatalf("headers %+v", h1)
	}
	if h2 := e1.headers(37, at); h2.etag != `"11"` {
		t.Fatalf("new sequence, etag %s", h2.etag)
	}
	if h3 := e1.headers(37, at.Add(time.Second)); h3.lastModified[0] != "Fri, 02 Jan 2026 03:04:06 GMT" {
		t.Fatalf("new time, %v", h3.lastModified)
	}

	// Large contents are converted, not kept; the total stays bounded.
	big, _ := ocf.Marshal(map[string]any{"x": string(make([]byte, reprMaxContent))})
	if e, err := c.get(big, conv); err != nil || len(e.json) < reprMaxContent {
		t.Fatalf("big: %v", err)
	}
	if _, ok := c.m[string(big)]; ok {
		t.Fatal("a large content was kept")
	}
	for i := range 4 * reprCacheBytes / (8 << 10) {
		v, _ := ocf.Marshal(map[string]any{"i": i, "pad": string(make([]byte, 4<<10))})
		if _, err := c.get(v, conv); err != nil {
			t.Fatal(err)
		}
		if c.bytes > reprCacheBytes {
			t.Fatalf("%d bytes after %d entries", c.bytes, i)
		}
	}
	sum := 0
	for k, e := range c.m {
		sum += len(k) + len(e.json) + reprEntryOverhead
	}
	if sum != c.bytes {
		t.Fatalf("counted %d bytes, holds %d", c.bytes, sum)
	}
}
