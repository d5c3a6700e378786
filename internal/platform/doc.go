// Package platform starts the infrastructure that `ocfcloud serve` embeds by
// default: a nats-server with JetStream on a file store and a FerretDB that
// speaks the MongoDB wire protocol over SQLite files. Tests use the same code
// on random ports. It must not hold business logic: services only see a NATS
// URL and a MongoDB URI, so pointing them at external servers is configuration.
package platform
