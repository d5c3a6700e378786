// Package ocf holds the OCF device-to-cloud wire model shared by the gateway,
// the registry and the device simulator: the one CBOR codec, the CoAP content
// formats and OCF options that real devices send, and the request/response
// types of /oic/sec/account, /oic/sec/session, /oic/sec/tokenrefresh and
// /oic/rd as defined by the swagger files in ../shared/spec.
//
// It must not know about NATS, MongoDB or HTTP.
package ocf
