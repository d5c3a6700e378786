// Package e2e holds end-to-end tests that run the whole cloud in-process on
// random ports, with embedded NATS and FerretDB and a simulated device, and
// talk to it only over its network interfaces, as a user would.
package e2e
