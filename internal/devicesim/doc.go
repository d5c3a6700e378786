// Package devicesim is an OCF device that talks to the cloud the way
// iotivity-lite does: it dials the CoAP gateway over TCP (or TLS), signs up
// once with an onboarding code, signs in on every connection, publishes
// /oic/d, /oic/p and one light (/light/1), and then serves GET, POST and
// observe requests that the cloud sends back over the same connection.
//
// It owns only its own in-memory state (credentials and the light). It must
// not import any cloud service package; it meets the cloud on the wire only,
// so it can be used to test the gateway against real-device behaviour.
package devicesim
