// Package events defines the one envelope for every device event, the NATS
// subjects they travel on, and the JetStream stream that keeps them. The
// gateway publishes, the registry and the webhook dispatcher consume; all of
// them build subjects and decode envelopes only through this package.
package events
