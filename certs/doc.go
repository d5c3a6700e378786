// Package certs owns the cloud's certificates: the development PKI that
// `ocfcloud serve` creates by itself, and the production PKI an operator
// makes with `ocfcloud certs ...` (or cert-manager) for Kubernetes.
//
// Development (EnsureDev): a self-signed CA whose subject is the cloud id
// ("uuid:<sid>", the OCF cloud trust anchor), the server certificate shared
// by the coaps+tcp and HTTPS listeners, and the signing of OCF device
// identity certificates from device CSRs. Everything lives as PEM files in one
// directory (0700, keys 0600 in PKCS#8) and is created on first start; later
// starts reload it, so the CA fingerprint and cloud id stay stable across
// restarts. The server certificate is derived state: it is reissued whenever
// it is missing, unreadable, within 30 days of expiry (also while serving:
// ServerTLSConfig picks the certificate per handshake), no longer chains to
// the CA, or no longer names the configured hosts. The CA is the trust anchor
// devices hold: it is never replaced silently, only re-dated with the same key
// and subject when it nears expiry.
//
// Production (CA, NewRootCA, NewIntermediate, Issue*): a root and an
// intermediate (ECDSA P-256 by default), the gateway's server certificate
// (CN uuid:<sid>, DNS/IP SANs, OCF end-entity usages), an HTTPS certificate,
// and device identity certificates from a CSR or for a new key. Verify checks
// a certificate for its role (chain, validity, key usage, OCF profile) and
// reports every problem at once, each wrapping a sentinel error.
// FileCertificate serves a certificate from files that are rotated under it;
// ServerTLSFromFiles builds a server TLS config from such files (gateway or
// HTTPS) and refuses, at start, a certificate devices would refuse.
//
// The package does not decide who a device is: callers pass the device id they
// authenticated (sign-up, session), and a CSR's own subject is ignored. It does
// no network I/O and keeps no state beyond the files.
package certs
