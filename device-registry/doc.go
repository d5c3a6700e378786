// Package registry is the device registry: the source of truth for devices,
// their owners, online state, published links and resource twins.
//
// It consumes device events from JetStream with a durable consumer, makes each
// change durable (device documents in MongoDB; twin contents and online state
// in JetStream KV, because the embedded FerretDB scans a collection on every
// query) and only then acks. Applying an event twice or out of order changes
// nothing. Every query is answered from memory, which is rebuilt on start, and
// is served as the NATS micro service described in internal/registryapi.
//
// It must not talk to devices or issue tokens.
package registry
