package certs

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// FileCertificate serves a TLS certificate from PEM files that something else
// rotates: cert-manager updating a mounted Secret, or an operator replacing
// the files. It re-reads them when their modification time or size changes,
// checking at most every Interval, and keeps serving the last good pair when
// a new one is unreadable or does not match (half-written files during a
// rotation are normal).
type FileCertificate struct {
	CertFile, KeyFile string
	Interval          time.Duration // default 10 s
	Now               func() time.Time

	mu        sync.Mutex
	cur       *tls.Certificate
	stamp     string
	nextCheck time.Time
	lastErr   error
}

// LoadFileCertificate reads the pair once and fails on any problem, so a
// misconfigured deployment stops at start rather than at the first handshake.
func LoadFileCertificate(certFile, keyFile string) (*FileCertificate, error) {
	f := &FileCertificate{CertFile: certFile, KeyFile: keyFile}
	cert, stamp, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur, f.stamp = cert, stamp
	return f, nil
}

func (f *FileCertificate) load() (*tls.Certificate, string, error) {
	var stamp string
	for _, p := range []string{f.CertFile, f.KeyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, "", fmt.Errorf("certs: %w", err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, "", fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, "", fmt.Errorf("certs: %w", err)
	}
	chain, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, "", fmt.Errorf("certs: %s: %w", f.CertFile, err)
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("certs: %s: %w", f.KeyFile, err)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		return nil, "", fmt.Errorf("certs: %s does not hold the key of %s", f.KeyFile, f.CertFile)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, stamp, nil
}

// Current returns the certificate to present, reloading it when the files
// changed.
func (f *FileCertificate) Current() *tls.Certificate {
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	t := now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil && t.Before(f.nextCheck) {
		return f.cur
	}
	interval := f.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	f.nextCheck = t.Add(interval)
	cert, stamp, err := f.load()
	f.lastErr = err
	if err == nil && stamp != f.stamp {
		f.cur, f.stamp = cert, stamp
	}
	return f.cur
}

// Err is the error of the last reload, nil when it succeeded.
func (f *FileCertificate) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// GetCertificate fits tls.Config.GetCertificate.
func (f *FileCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := f.Current(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("certs: no certificate loaded from %s", f.CertFile)
}
