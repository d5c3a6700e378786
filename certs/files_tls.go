package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// FileTLSOptions configure ServerTLSFromFiles: the production counterpart of
// Bundle.ServerTLSConfig, for certificates an operator or cert-manager
// provides (the chart's --coap-tls-cert/--coap-tls-key/--device-ca and
// --tls-cert/--tls-key).
type FileTLSOptions struct {
	CertFile, KeyFile string // PEM; CertFile holds the leaf then its intermediates
	// ClientCAFile holds the CAs client (device) certificates must chain to;
	// required with ClientAuth tls.RequireAndVerifyClientCert.
	ClientCAFile string
	ClientAuth   tls.ClientAuthType
	// CloudID, when set, makes the certificate a gateway certificate: it must
	// follow the OCF profile with CN "uuid:<CloudID>", because devices check it.
	CloudID string
}

// ServerTLSFromFiles checks the files and returns a TLS 1.2+ server config
// that re-reads them when they change (FileCertificate), so a rotated Secret
// takes effect without a restart. Problems a device would hit later (wrong
// CN, expired certificate, missing usages) are errors now.
func ServerTLSFromFiles(o FileTLSOptions) (*tls.Config, *FileCertificate, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, nil, errors.New("certs: both a certificate and a key file are needed")
	}
	fc, err := LoadFileCertificate(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	leaf := fc.cur.Leaf
	profile := ProfileHTTP
	if o.CloudID != "" {
		profile = ProfileGateway
	}
	if err := Verify(leaf, VerifyOptions{Profile: profile, ID: o.CloudID}); err != nil {
		return nil, nil, fmt.Errorf("certs: %s: %w", o.CertFile, err)
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: fc.GetCertificate,
		ClientAuth:     o.ClientAuth,
	}
	if o.ClientCAFile != "" {
		if cfg.ClientCAs, err = LoadCertPoolFile(o.ClientCAFile); err != nil {
			return nil, nil, err
		}
	} else if o.ClientAuth >= tls.VerifyClientCertIfGiven {
		return nil, nil, errors.New("certs: verifying client certificates needs a client CA file")
	}
	return cfg, fc, nil
}

// LoadCertPoolFile reads PEM CA certificates into a pool; a file without any
// certificate is an error rather than an empty pool that trusts nothing.
func LoadCertPoolFile(path string) (*x509.CertPool, error) {
	cs, err := ReadCertificatesFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ReadCertificatesFile reads every certificate in a PEM file, e.g. the cloud
// CA (--ca-cert) handed to devices in onboarding codes.
func ReadCertificatesFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	cs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	return cs, nil
}
