// Package coapgateway terminates device connections: CoAP over TCP (coap+tcp)
// and over TLS with device certificates (coaps+tcp). It implements the OCF
// device-to-cloud resources (/oic/sec/account, /oic/sec/session,
// /oic/sec/tokenrefresh, /oic/rd), exchanges onboarding codes and refresh
// tokens at authz over HTTP, verifies access tokens locally, observes the
// resources that devices publish and turns everything into events on
// JetStream. It answers commands (internal/commands) for the devices it
// holds by sending them CoAP requests, and enforces the limits in Limits.
//
// Each connection is a deviceConn (conn.go): go-coap's TCP codec and message
// type under one goroutine that reads, answers pings and dispatches; go-coap's
// own connection type is used only on the device side (simulator, tests).
//
// Sessions live in memory on the connection and die with it. The gateway must
// not keep durable state or answer queries about devices: that is the
// registry's job.
package coapgateway
