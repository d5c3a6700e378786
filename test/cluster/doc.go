// Package cluster runs ocfcloud as a distributed system of separate
// processes on loopback addresses: a three-node NATS JetStream cluster, a
// database, authz with the registry, two C2C APIs and two gateways. Its test
// breaks parts of it on purpose. Run it with `make cluster-test`.
package cluster
