// Package registrybench measures the event path from a gateway's publish to
// a durably applied twin in the device registry, with embedded NATS
// JetStream and FerretDB: events per second and publish-to-applied latency.
package registrybench
