// Package c2cbench measures the C2C API on a whole in-process cloud with a
// simulated device: twin reads per second against a bare net/http handler
// returning the same bytes (the ceiling, measured in the same run with the
// same load generator), twin-read latency at half that load, and live updates
// that go through the gateway to the device and back.
package c2cbench
