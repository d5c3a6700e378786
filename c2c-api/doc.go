// Package c2capi serves the OCF Cloud-to-Cloud REST API under /api/v1/devices
// for applications holding Bearer tokens from authz. It checks scopes and
// ownership, reads devices and resource twins from the registry over NATS and
// answers in the OCF C2C shapes (JSON by default, OCF CBOR on request).
//
// It must not keep device state of its own or talk to devices directly: live
// requests go through the gateway on NATS. What it keeps is derived and
// bounded: the JSON of CBOR representations, keyed by the CBOR bytes (at
// most 8 MiB, see reprCache), so a twin read does not convert the same
// content again.
package c2capi
