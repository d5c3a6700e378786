// Package commands is the contract for sending a request to a connected
// device over NATS: the subject, the request and answer types and a client.
// The coap-gateway that holds the device's connection answers; c2c-api (and
// anything else) asks through Client, so neither imports the other.
package commands
