// Package leases keeps per-instance liveness leases in a JetStream KV bucket.
// A gateway instance renews its lease while it runs; the registry lists the
// live leases and marks the devices of an instance whose lease expired
// offline, so a crashed gateway or a lost network does not leave devices
// "online" forever. Expiry is the bucket's MaxAge: a lease not renewed within
// the TTL is gone.
package leases
