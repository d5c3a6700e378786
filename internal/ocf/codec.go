package ocf

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Core deterministic encoding keeps integers as CBOR integers (real devices
	// reject floats where the schema says integer) and makes payloads stable
	// for tests and deduplication.
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
		MaxNestedLevels:  32,
		MaxArrayElements: 4096,
		MaxMapPairs:      4096,
		IntDec:           cbor.IntDecConvertSigned,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v as OCF CBOR.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes OCF CBOR into v. Bounds on nesting and sizes protect the
// caller from hostile payloads.
func Unmarshal(data []byte, v any) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("invalid CBOR: %w", err)
	}
	return nil
}

// CBORToJSON converts an OCF CBOR document to JSON. Byte strings become base64
// strings as encoding/json does for []byte.
func CBORToJSON(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return []byte("null"), nil
	}
	var v any
	if err := Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// JSONToCBOR converts a JSON document to OCF CBOR. Whole numbers become CBOR
// integers, other numbers floats.
func JSONToCBOR(data []byte) ([]byte, error) {
	var v any
	dec := json.NewDecoder(bytesReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("invalid JSON: trailing data")
	}
	return Marshal(normalizeNumbers(v))
}

func normalizeNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = normalizeNumbers(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = normalizeNumbers(e)
		}
		return t
	default:
		return v
	}
}
