package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// SignDeviceCSR issues an OCF identity certificate for deviceID from a PEM CSR
// and returns it as PEM. The CSR must be correctly self-signed with an ECDSA
// P-256 key (the only key OCF devices use). Its subject is ignored: the
// certificate names the device the caller authenticated, CN "uuid:<deviceID>".
// A validity of zero or less means one year; the certificate never outlives
// the CA.
func (b *Bundle) SignDeviceCSR(csrPEM []byte, deviceID string, validity time.Duration) ([]byte, error) {
	if b == nil || b.CACert == nil || b.CAKey == nil {
		return nil, errors.New("certs: sign device CSR: bundle has no CA")
	}
	if !ids.IsUUID(deviceID) {
		return nil, fmt.Errorf("certs: sign device CSR: device id %q: %w", deviceID, ErrInvalidDeviceID)
	}
	csr, err := parseDeviceCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: sign device CSR for %s: %w: %w", deviceID, ErrInvalidCSR, err)
	}
	if validity <= 0 {
		validity = defaultDeviceValidity
	}
	now := b.clock()()
	notAfter := capTo(now.Add(validity), b.CACert.NotAfter)
	if !notAfter.After(now) {
		return nil, fmt.Errorf("certs: sign device CSR for %s: CA expired at %s", deviceID, b.CACert.NotAfter.Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("certs: sign device CSR for %s: %w", deviceID, err)
	}
	tmpl := ocfLeafTemplate(deviceID)
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), notAfter
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.CACert, csr.PublicKey, b.CAKey)
	if err != nil {
		return nil, fmt.Errorf("certs: sign device CSR for %s: %w", deviceID, err)
	}
	return encodeCertPEM(der), nil
}

func parseDeviceCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	var der []byte
	for rest := csrPEM; der == nil; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no CERTIFICATE REQUEST PEM block")
		}
		// "NEW CERTIFICATE REQUEST" is what older mbedTLS and OpenSSL write.
		if block.Type == "CERTIFICATE REQUEST" || block.Type == "NEW CERTIFICATE REQUEST" {
			der = block.Bytes
		}
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %s, want ECDSA P-256", csr.PublicKeyAlgorithm)
	}
	if pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key curve is %s, want P-256", pub.Curve.Params().Name)
	}
	return csr, nil
}

func (b *Bundle) clock() func() time.Time {
	if b.now == nil {
		return time.Now
	}
	return b.now
}

// DeviceIDFromCert returns the device id from an OCF identity certificate,
// whose subject CN is "uuid:<device id>". It checks the form only; callers
// verify the certificate chain first (the TLS handshake does).
func DeviceIDFromCert(c *x509.Certificate) (string, error) {
	if c == nil {
		return "", fmt.Errorf("certs: no certificate: %w", ErrInvalidDeviceID)
	}
	cn := c.Subject.CommonName
	id, ok := strings.CutPrefix(cn, ocfUUIDPrefix)
	if !ok || !ids.IsUUID(id) {
		return "", fmt.Errorf("certs: subject CN %q is not \"uuid:<uuid>\": %w", cn, ErrInvalidDeviceID)
	}
	return id, nil
}

// Fingerprint returns the SHA-256 of der as uppercase hex pairs joined by
// colons ("AB:CD:..."), the form the portal shows for pinning.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var sb strings.Builder
	sb.Grow(len(sum) * 3)
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}
