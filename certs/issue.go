package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const ocfUUIDPrefix = "uuid:"

// ensureCA loads the CA or creates it. A lone ca.key (a crash between the two
// writes, or a deleted ca.pem) gets a new certificate for the same key and
// subject, which keeps every issued certificate valid; a lone ca.pem cannot be
// recovered and is an error rather than a silent new trust anchor.
func ensureCA(dir, cloudID string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	keyPath, certPath := filepath.Join(dir, caKeyFile), filepath.Join(dir, caCertFile)
	haveKey, err := exists(keyPath)
	if err != nil {
		return nil, nil, err
	}
	haveCert, err := exists(certPath)
	if err != nil {
		return nil, nil, err
	}
	if !haveKey && haveCert {
		return nil, nil, fmt.Errorf("%s exists without %s (remove %s to start a new PKI): %w",
			certPath, keyPath, dir, ErrCorruptPKI)
	}

	var key *ecdsa.PrivateKey
	if haveKey {
		if key, err = readKeyFile(keyPath); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrCorruptPKI, err)
		}
	} else {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, nil, fmt.Errorf("generate CA key: %w", err)
		}
		if err := writeKeyFile(keyPath, key); err != nil {
			return nil, nil, fmt.Errorf("write CA key: %w", err)
		}
	}

	if haveCert {
		cert, err := readCertFile(certPath)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrCorruptPKI, err)
		}
		if err := checkCA(cert, key, cloudID); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", certPath, err)
		}
		if now.Add(renewBefore).Before(cert.NotAfter) {
			return cert, key, nil
		}
		// Near expiry: re-date it; same key and subject keep issued certificates valid.
	}
	cert, err := issueCA(key, cloudID, now)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(certPath, encodeCertPEM(cert.Raw), 0o644); err != nil {
		return nil, nil, fmt.Errorf("write CA certificate: %w", err)
	}
	return cert, key, nil
}

func checkCA(cert *x509.Certificate, key *ecdsa.PrivateKey, cloudID string) error {
	if !cert.IsCA {
		return fmt.Errorf("not a CA certificate: %w", ErrCorruptPKI)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return fmt.Errorf("certificate does not match %s: %w", caKeyFile, ErrCorruptPKI)
	}
	if want := ocfUUIDPrefix + cloudID; !strings.EqualFold(cert.Subject.CommonName, want) {
		return fmt.Errorf("CA subject CN %q, want %q: %w", cert.Subject.CommonName, want, ErrCloudIDMismatch)
	}
	return nil
}

func issueCA(key *ecdsa.PrivateKey, cloudID string, now time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: ocfUUIDPrefix + cloudID, Organization: []string{"ocfcloud dev CA"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// sanSet is the normalised set of a server certificate's names, so that the
// same hosts in another order or spelling do not force a new certificate.
type sanSet struct {
	dns []string
	ips []net.IP
}

func (s sanSet) keys() []string {
	var k []string
	for _, d := range s.dns {
		k = append(k, "dns:"+strings.ToLower(d))
	}
	for _, ip := range s.ips {
		k = append(k, "ip:"+ip.String())
	}
	slices.Sort(k)
	return slices.Compact(k)
}

func parseHosts(hosts []string) (sanSet, error) {
	var s sanSet
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
			s.ips = append(s.ips, ip)
			continue
		}
		if h == "" || strings.ContainsAny(h, ":/ \t@") {
			return sanSet{}, fmt.Errorf("host %q is neither an IP address nor a DNS name (no scheme or port)", h)
		}
		s.dns = append(s.dns, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	return s, nil
}

// ensureServer returns the server certificate, reissuing it when it is not fit
// for use. It is derived state, so unreadable files are replaced, not reported.
func ensureServer(dir, cloudID string, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, sans sanSet, now time.Time) (tls.Certificate, error) {
	keyPath, certPath := filepath.Join(dir, serverKeyFile), filepath.Join(dir, serverCertFile)
	cert, err := readCertFile(certPath)
	var key *ecdsa.PrivateKey
	if err == nil {
		key, err = readKeyFile(keyPath)
	}
	var pathErr *fs.PathError
	if err != nil && errors.As(err, &pathErr) && !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("load server certificate: %w", err)
	}
	if err == nil && serverCertFits(cert, key, caCert, sans, now) {
		return chain(cert, key, caCert), nil
	}

	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// OCF devices read the peer's id from the CN; the server speaks for the cloud.
		Subject:   pkix.Name{CommonName: ocfUUIDPrefix + cloudID, Organization: []string{"ocfcloud"}},
		NotBefore: now.Add(-backdate),
		NotAfter:  capTo(now.Add(serverValidity), caCert.NotAfter),
		KeyUsage:  x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		// OCF stacks require both usages on end-entity certificates.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create server certificate: %w", err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return tls.Certificate{}, fmt.Errorf("parse server certificate: %w", err)
	}
	if err := writeKeyFile(keyPath, key); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server key: %w", err)
	}
	if err := writeFileAtomic(certPath, encodeCertPEM(der), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server certificate: %w", err)
	}
	return chain(cert, key, caCert), nil
}

func serverCertFits(cert *x509.Certificate, key *ecdsa.PrivateKey, caCert *x509.Certificate, sans sanSet, now time.Time) bool {
	if !key.PublicKey.Equal(cert.PublicKey) {
		return false
	}
	if !now.Add(renewBefore).Before(cert.NotAfter) {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return false
	}
	return slices.Equal(sanSet{dns: cert.DNSNames, ips: cert.IPAddresses}.keys(), sans.keys())
}

func chain(leaf *x509.Certificate, key *ecdsa.PrivateKey, ca *x509.Certificate) tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}
}

func capTo(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}

// newSerial returns a random positive 127-bit serial number (RFC 5280: at most 20 octets).
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
