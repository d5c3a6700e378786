// Package webhook signs and verifies webhook deliveries, both the OCF
// Cloud-to-Cloud way (Event-Signature) and the Standard Webhooks way
// (webhook-id, webhook-timestamp, webhook-signature), and sends them with an
// HTTP client that refuses unsafe destinations (SSRF): only http(s), no
// redirects, bounded time and response size, and an address policy checked
// when the connection is dialled, so a DNS answer cannot smuggle a denied
// address past the check made at subscription time.
//
// Receiver is a webhook endpoint that verifies both signatures; tests,
// benchmarks and the documentation use it as the reference consumer.
//
// It must not know about subscriptions, NATS or the database.
package webhook
