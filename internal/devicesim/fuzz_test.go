package devicesim

import (
	"testing"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// FuzzUpdateLight feeds arbitrary bodies to the POST /light/1 parser: it must
// never panic, and a rejected body must leave the light as it was.
func FuzzUpdateLight(f *testing.F) {
	for _, v := range []any{
		map[string]any{"state": true, "power": 3, "name": "x"},
		map[string]any{"power": "high"},
		map[string]any{"power": 1.5},
		[]any{1, 2},
		"text",
	} {
		b, err := ocf.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xbf})
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := New(Config{CIS: "coap+tcp://h:5683", AccessToken: "c"})
		if err != nil {
			t.Fatal(err)
		}
		before := d.lightRep()
		if err := d.updateLight(body); err != nil && d.lightRep() != before {
			t.Fatalf("rejected update changed the light: %v", err)
		}
	})
}
