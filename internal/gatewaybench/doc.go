// Package gatewaybench measures the CoAP gateway (`ocfcloud bench gateway`):
// full onboardings per second, memory per signed-in idle device next to a
// bare go-coap server holding the same connections, and mutual TLS
// handshake + sign-in per second next to bare crypto/tls handshakes in the
// same run. It runs the gateway against embedded NATS and a stand-in token
// endpoint that issues real ES256 JWTs, so authz's database and rate limits
// stay out of the numbers.
package gatewaybench
