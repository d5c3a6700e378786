// Package cloud assembles ocfcloud's services into one process: it starts or
// connects to NATS and MongoDB, loads the dev PKI, and runs authz, the device
// registry, the C2C API and the CoAP gateway behind one HTTP listener. The
// `serve` command and the end-to-end tests use it; it holds wiring only, no
// business logic.
package cloud
