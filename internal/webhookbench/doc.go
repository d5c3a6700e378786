// Package webhookbench measures webhook delivery end to end against an
// in-process cloud: simulated devices, resource-level subscriptions and a
// local receiver that verifies every signature. It prints a Markdown table
// of events delivered per second and the latency from an event (published
// as the gateway publishes it, or a device notification) to the webhook
// arriving. It must not be imported by the services.
package webhookbench
