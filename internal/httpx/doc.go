// Package httpx is the one place that writes HTTP error answers for REST
// endpoints (RFC 9457 problem JSON) and JSON bodies. OAuth endpoints write
// their own error form in package authz, as RFC 6749 requires.
package httpx
