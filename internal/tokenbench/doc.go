// Package tokenbench measures authz's token endpoint: client_credentials and
// refresh_token grants per second with p50/p99, against a bare net/http
// handler that signs one ES256 JWT per request as the ceiling. It starts its
// own authz on embedded FerretDB; it is what `ocfcloud bench token` runs.
package tokenbench
