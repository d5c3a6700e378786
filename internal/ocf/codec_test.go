package ocf

import (
	"bytes"
	"testing"
)

func TestIntegersStayCBORIntegers(t *testing.T) {
	data, err := Marshal(SignUpResponse{AccessToken: "a", RefreshToken: "r", UserID: "u", ExpiresIn: 3600})
	if err != nil {
		t.Fatal(err)
	}
	// 0x19 0x0e 0x10 is the CBOR unsigned integer 3600.
	if !bytes.Contains(data, []byte{0x69, 'e', 'x', 'p', 'i', 'r', 'e', 's', 'i', 'n', 0x19, 0x0e, 0x10}) {
		t.Fatalf("expiresin is not a CBOR integer: %x", data)
	}
	j, err := JSONToCBOR([]byte(`{"power": 5, "ratio": 0.5}`))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := Unmarshal(j, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["power"].(int64); !ok {
		t.Fatalf("power decoded as %T", m["power"])
	}
}

func TestCBORJSONRoundTrip(t *testing.T) {
	c, err := JSONToCBOR([]byte(`{"state":true,"power":42,"name":"x","nested":{"a":[1,2]}}`))
	if err != nil {
		t.Fatal(err)
	}
	j, err := CBORToJSON(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(j) != `{"name":"x","nested":{"a":[1,2]},"power":42,"state":true}` {
		t.Fatalf("round trip: %s", j)
	}
	for _, bad := range []string{`{`, `{"a":1} x`, ``} {
		if _, err := JSONToCBOR([]byte(bad)); err == nil {
			t.Errorf("JSONToCBOR(%q) accepted", bad)
		}
	}
}

func FuzzUnmarshalSignUp(f *testing.F) {
	seed, _ := Marshal(SignUpRequest{DeviceID: "d", AccessToken: "a"})
	f.Add(seed)
	f.Add([]byte{0xa2, 0x62, 0x64})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req SignUpRequest
		_ = Unmarshal(data, &req)
		var pub PublishRequest
		_ = Unmarshal(data, &pub)
		_, _ = CBORToJSON(data)
	})
}
