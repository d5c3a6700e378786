package c2capi

import registry "github.com/ocfcloud/ocfcloud/device-registry"

// RoutePatterns lists every registered route for the documentation test.
func RoutePatterns() []string {
	out := make([]string, 0, len(routes))
	for _, r := range routes {
		out = append(out, r.pattern)
	}
	return out
}

// The registry of the all-in-one process offers the API's hot paths their
// cheaper lookups.
var _ localRegistry = (*registry.Registry)(nil)
