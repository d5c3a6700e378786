// Package registryapi is the contract of the device registry's NATS query
// service: subjects, request and answer types, and a client. The registry
// implements it; c2c-api and others call it through Client, so neither side
// imports the other.
package registryapi
