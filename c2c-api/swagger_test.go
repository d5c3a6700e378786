package c2capi_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
)

// ocfSpecPath is the OCF C2C swagger file, the wire contract; ../shared sits
// beside the repository.
const ocfSpecPath = "../../shared/spec/oic.r.cloudapiforcloudservices.swagger.json"

// ocfSchemas loads the OCF C2C swagger definitions as OpenAPI 3 schemas. The
// file refers to schemas on openconnectivityfoundation.github.io, which are
// not reachable here; those references become "any value", so everything the
// file itself defines is still checked.
func ocfSchemas(t *testing.T) map[string]*openapi3.SchemaRef {
	t.Helper()
	raw, err := os.ReadFile(ocfSpecPath)
	if err != nil {
		t.Fatalf("OCF swagger: %v", err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	// Only the definitions are the contract for answers; some of the file's
	// path entries use definitions as responses, which the converter refuses.
	top := doc.(map[string]any)
	local, _ := json.Marshal(map[string]any{
		"swagger": top["swagger"], "info": top["info"], "paths": map[string]any{},
		"definitions": dropRemoteRefs(top["definitions"]),
	})
	var v2 openapi2.T
	if err := json.Unmarshal(local, &v2); err != nil {
		t.Fatal(err)
	}
	v3, err := openapi2conv.ToV3(&v2)
	if err != nil {
		t.Fatal(err)
	}
	return v3.Components.Schemas
}

func dropRemoteRefs(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok && !strings.HasPrefix(ref, "#") {
			return map[string]any{}
		}
		for k, e := range x {
			x[k] = dropRemoteRefs(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = dropRemoteRefs(e)
		}
	}
	return v
}

// validateOCF checks a JSON document against a definition of the OCF swagger.
func validateOCF(t *testing.T, schemas map[string]*openapi3.SchemaRef, name string, body []byte) {
	t.Helper()
	if err := ocfMismatch(schemas, name, body); err != nil {
		t.Errorf("answer does not match OCF %s: %v\n%s", name, err, body)
	}
}

func ocfMismatch(schemas map[string]*openapi3.SchemaRef, name string, body []byte) error {
	ref := schemas[name]
	if ref == nil || ref.Value == nil {
		return errors.New("no OCF schema " + name)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	return ref.Value.VisitJSON(v, openapi3.MultiErrors())
}

func TestOCFSchemaCheckRejectsWrongShapes(t *testing.T) {
	schemas := ocfSchemas(t)
	for _, bad := range []string{
		`{"device":{"di":"x","rt":["oic.wk.d"],"n":"a","dmn":[{"language":"en","value":"v"}]},"status":"online"}`,
		`{"device":{"di":"x","rt":["oic.wk.d"],"n":"a","dmn":[{"language":"en","value":"v"}]},"status":"ONLINE","links":[]}`,
		`{"device":{"di":"x"},"status":"online","links":[]}`,
	} {
		if ocfMismatch(schemas, "Device", []byte(bad)) == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
