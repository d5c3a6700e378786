package certs

import (
	"crypto/tls"
	"crypto/x509"
)

// ServerTLSConfig returns a TLS 1.2+ server configuration presenting the
// server certificate (with the CA in its chain) and trusting device
// certificates issued by the CA. Use tls.RequireAndVerifyClientCert for the
// coaps+tcp listener (OCF mutual TLS) and tls.NoClientCert for HTTPS.
// Each call returns a fresh config the caller may modify. The certificate is
// chosen per handshake (CurrentServerCert), so it is renewed before expiry
// without a restart.
func (b *Bundle) ServerTLSConfig(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return b.CurrentServerCert(), nil
		},
		ClientCAs:  b.CAPool(),
		ClientAuth: clientAuth,
	}
}

// CAPool returns a new pool holding only the cloud CA, for clients (RootCAs)
// and servers (ClientCAs) alike.
func (b *Bundle) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(b.CACert)
	return p
}
