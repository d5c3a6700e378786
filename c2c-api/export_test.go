package c2capi

// RoutePatterns lists every registered route for the documentation test.
func RoutePatterns() []string {
	out := make([]string, 0, len(routes))
	for _, r := range routes {
		out = append(out, r.pattern)
	}
	return out
}
