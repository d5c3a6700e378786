// Package certs owns the cloud's development PKI: a self-signed CA whose subject
// is the cloud id ("uuid:<sid>", the OCF cloud trust anchor), the server
// certificate shared by the coaps+tcp and HTTPS listeners, and the signing of
// OCF device identity certificates from device CSRs.
//
// Everything lives as PEM files in one directory (0700, keys 0600 in PKCS#8)
// and is created on first start by EnsureDev; later starts reload it, so the CA
// fingerprint and cloud id stay stable across restarts. The server certificate
// is derived state: it is reissued whenever it is missing, unreadable, close to
// expiry, no longer chains to the CA, or no longer names the configured hosts.
// The CA is the trust anchor devices hold: it is never replaced silently, only
// re-dated with the same key and subject when it nears expiry.
//
// The package does not decide who a device is: callers pass the device id they
// authenticated (sign-up, session) to SignDeviceCSR, and the CSR's own subject
// is ignored. It does no network I/O and keeps no state beyond the files.
package certs
