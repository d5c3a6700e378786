package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// OIDOCFIdentity is id-kp-ocfIdentity, the extended key usage the OCF
// security specification puts on identity certificates next to serverAuth
// and clientAuth. We emit it; Verify does not demand it, since device
// certificates from other manufacturers' CAs may omit it.
var OIDOCFIdentity = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 44924, 1, 6}

// Default lifetimes of the production PKI.
const (
	DefaultRootValidity         = 20 * 365 * 24 * time.Hour
	DefaultIntermediateValidity = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity         = 365 * 24 * time.Hour
)

// KeyOptions say how new keys are made. The zero value is ECDSA P-256, the
// only curve OCF devices support; P-384 is for CAs that never face a device.
type KeyOptions struct {
	Curve elliptic.Curve // nil means P-256
}

func (o KeyOptions) generate() (*ecdsa.PrivateKey, error) {
	c := o.Curve
	if c == nil {
		c = elliptic.P256()
	}
	if c != elliptic.P256() && c != elliptic.P384() {
		return nil, fmt.Errorf("curve %s: %w (want P-256 or P-384)", c.Params().Name, ErrKeyType)
	}
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", c.Params().Name, err)
	}
	return k, nil
}

// CurveByName maps "P-256"/"P-384" (also "p256", "prime256v1", "secp384r1")
// to a curve, for flags.
func CurveByName(name string) (elliptic.Curve, error) {
	switch strings.ToLower(strings.ReplaceAll(name, "-", "")) {
	case "", "p256", "prime256v1", "secp256r1":
		return elliptic.P256(), nil
	case "p384", "secp384r1":
		return elliptic.P384(), nil
	}
	return nil, fmt.Errorf("curve %q: %w (want P-256 or P-384)", name, ErrKeyType)
}

// CA is a certificate authority that can issue certificates: a root, or an
// intermediate with the chain up to (not including) its root.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain holds the certificates above Cert, excluding the root; empty for
	// a root or an intermediate issued directly by the root.
	Chain []*x509.Certificate
	// Root is the self-signed trust anchor; Cert itself for a root CA.
	Root *x509.Certificate

	Now func() time.Time // default time.Now
}

// CAOptions configure NewRootCA and (*CA).NewIntermediate.
type CAOptions struct {
	// CommonName of the CA; default "ocfcloud root CA" / "ocfcloud intermediate CA".
	// For the OCF cloud trust anchor use "uuid:<sid>".
	CommonName   string
	Organization string        // default "ocfcloud"
	Validity     time.Duration // default 20 years (root), 10 years (intermediate)
	Key          KeyOptions
	Now          func() time.Time
}

func (o CAOptions) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

func (o CAOptions) subject(defaultCN string) pkix.Name {
	cn, org := o.CommonName, o.Organization
	if cn == "" {
		cn = defaultCN
	}
	if org == "" {
		org = "ocfcloud"
	}
	return pkix.Name{CommonName: cn, Organization: []string{org}}
}

// NewRootCA creates a self-signed root CA that may sign one level of
// intermediates (path length 1).
func NewRootCA(o CAOptions) (*CA, error) {
	key, err := o.Key.generate()
	if err != nil {
		return nil, fmt.Errorf("certs: root CA: %w", err)
	}
	validity := o.Validity
	if validity <= 0 {
		validity = DefaultRootValidity
	}
	now := o.now()
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               o.subject("ocfcloud root CA"),
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create root CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Root: cert, Now: o.Now}, nil
}

// NewIntermediate creates a CA signed by ca that issues end-entity
// certificates only (path length 0). It never outlives its issuer.
func (ca *CA) NewIntermediate(o CAOptions) (*CA, error) {
	if err := ca.check(); err != nil {
		return nil, err
	}
	key, err := o.Key.generate()
	if err != nil {
		return nil, fmt.Errorf("certs: intermediate CA: %w", err)
	}
	validity := o.Validity
	if validity <= 0 {
		validity = DefaultIntermediateValidity
	}
	if o.Now == nil {
		o.Now = ca.Now
	}
	now := o.now()
	notAfter := capTo(now.Add(validity), ca.Cert.NotAfter)
	if !notAfter.After(now) {
		return nil, fmt.Errorf("certs: intermediate CA: issuer expired at %s: %w", ca.Cert.NotAfter.Format(time.RFC3339), ErrExpired)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               o.subject("ocfcloud intermediate CA"),
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: create intermediate CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	chain := ca.Chain
	if ca.Cert != ca.Root {
		chain = append([]*x509.Certificate{ca.Cert}, ca.Chain...)
	}
	return &CA{Cert: cert, Key: key, Chain: chain, Root: ca.Root, Now: o.Now}, nil
}

func (ca *CA) check() error {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return errors.New("certs: CA has no certificate or key")
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certs: %q is not a CA certificate: %w", ca.Cert.Subject.CommonName, ErrKeyUsage)
	}
	if !ca.Key.PublicKey.Equal(ca.Cert.PublicKey) {
		return errors.New("certs: CA key does not match its certificate")
	}
	return nil
}

func (ca *CA) now() time.Time {
	if ca.Now == nil {
		return time.Now()
	}
	return ca.Now()
}

// issuerChain is what a server sends after its leaf: the issuing CA and the
// intermediates above it, never the root.
func (ca *CA) issuerChain() []*x509.Certificate {
	if ca.Cert == ca.Root || (ca.Root != nil && ca.Cert.Equal(ca.Root)) {
		return nil
	}
	return append([]*x509.Certificate{ca.Cert}, ca.Chain...)
}

// CertPEM is the CA certificate followed by its chain (without the root,
// unless the CA is the root).
func (ca *CA) CertPEM() []byte {
	out := encodeCertPEM(ca.Cert.Raw)
	for _, c := range ca.Chain {
		out = append(out, encodeCertPEM(c.Raw)...)
	}
	return out
}

// RootPEM is the trust anchor devices and clients install.
func (ca *CA) RootPEM() []byte {
	if ca.Root == nil {
		return encodeCertPEM(ca.Cert.Raw)
	}
	return encodeCertPEM(ca.Root.Raw)
}

// KeyPEM is the CA key in PKCS#8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// Issued is an end-entity certificate with the chain that proves it.
type Issued struct {
	Cert *x509.Certificate
	// Key is the private key when the certificate was issued for a new key;
	// nil when it was issued from a CSR (the key stays on the device).
	Key   *ecdsa.PrivateKey
	Chain []*x509.Certificate // issuing CA and intermediates, no root
}

// CertPEM is the leaf followed by its chain, the form TLS servers load.
func (i *Issued) CertPEM() []byte {
	out := encodeCertPEM(i.Cert.Raw)
	for _, c := range i.Chain {
		out = append(out, encodeCertPEM(c.Raw)...)
	}
	return out
}

// KeyPEM is the private key in PKCS#8 PEM; an error when issued from a CSR.
func (i *Issued) KeyPEM() ([]byte, error) {
	if i.Key == nil {
		return nil, errors.New("certs: issued from a CSR: the private key is the requester's")
	}
	return keyPEM(i.Key)
}

// LeafOptions configure end-entity certificates.
type LeafOptions struct {
	Validity time.Duration // default one year; capped to the issuer's expiry
	Key      KeyOptions    // for a new key; ignored with a CSR
}

// IssueGatewayCert issues the coaps+tcp server certificate: CN "uuid:<cloudID>"
// (devices read the cloud id from it), the DNS names and IP addresses in hosts
// as SANs, the OCF end-entity usages (digitalSignature, keyAgreement;
// serverAuth and clientAuth), for a new P-256 key.
func (ca *CA) IssueGatewayCert(cloudID string, hosts []string, o LeafOptions) (*Issued, error) {
	if !ids.IsUUID(cloudID) {
		return nil, fmt.Errorf("certs: gateway certificate: cloud id %q: %w", cloudID, ErrInvalidDeviceID)
	}
	sans, err := parseHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("certs: gateway certificate: %w", err)
	}
	if len(hosts) == 0 {
		return nil, errors.New("certs: gateway certificate: no hosts (devices check the name they dial)")
	}
	if o.Key.Curve != nil && o.Key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("certs: gateway certificate: %s: %w (OCF devices speak P-256 only)", o.Key.Curve.Params().Name, ErrKeyType)
	}
	tmpl := ocfLeafTemplate(cloudID)
	tmpl.Subject.Organization = []string{"ocfcloud"}
	tmpl.DNSNames, tmpl.IPAddresses = sans.dns, sans.ips
	return ca.issue(tmpl, nil, o)
}

// IssueHTTPCert issues an HTTPS server certificate (serverAuth only) whose
// CN is the first host and whose SANs are all hosts.
func (ca *CA) IssueHTTPCert(hosts []string, o LeafOptions) (*Issued, error) {
	if len(hosts) == 0 {
		return nil, errors.New("certs: HTTP certificate: no hosts")
	}
	sans, err := parseHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("certs: HTTP certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: strings.Trim(hosts[0], "[]"), Organization: []string{"ocfcloud"}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              sans.dns,
		IPAddresses:           sans.ips,
	}
	return ca.issue(tmpl, nil, o)
}

// IssueDeviceCert issues an OCF identity certificate, CN "uuid:<deviceID>",
// for the key in csrPEM, or for a new P-256 key when csrPEM is nil. The CSR's
// subject is ignored: the caller vouches for deviceID.
func (ca *CA) IssueDeviceCert(deviceID string, csrPEM []byte, o LeafOptions) (*Issued, error) {
	if !ids.IsUUID(deviceID) {
		return nil, fmt.Errorf("certs: device certificate: device id %q: %w", deviceID, ErrInvalidDeviceID)
	}
	var pub crypto.PublicKey
	if csrPEM != nil {
		csr, err := parseDeviceCSR(csrPEM)
		if err != nil {
			return nil, fmt.Errorf("certs: device certificate for %s: %w: %w", deviceID, ErrInvalidCSR, err)
		}
		pub = csr.PublicKey
	} else if o.Key.Curve != nil && o.Key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("certs: device certificate: %s: %w (OCF devices speak P-256 only)", o.Key.Curve.Params().Name, ErrKeyType)
	}
	return ca.issue(ocfLeafTemplate(deviceID), pub, o)
}

// ocfLeafTemplate is the OCF end-entity profile shared by device identity
// certificates and the gateway's server certificate.
func ocfLeafTemplate(id string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: ocfUUIDPrefix + id},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{OIDOCFIdentity},
		BasicConstraintsValid: true,
	}
}

// issue signs tmpl for pub, or for a new key when pub is nil.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, o LeafOptions) (*Issued, error) {
	if err := ca.check(); err != nil {
		return nil, err
	}
	now := ca.now()
	validity := o.Validity
	if validity <= 0 {
		validity = DefaultLeafValidity
	}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = capTo(now.Add(validity), ca.Cert.NotAfter)
	if !tmpl.NotAfter.After(now) {
		return nil, fmt.Errorf("certs: issue %q: CA expired at %s: %w", tmpl.Subject.CommonName, ca.Cert.NotAfter.Format(time.RFC3339), ErrExpired)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	var key *ecdsa.PrivateKey
	if pub == nil {
		if key, err = o.Key.generate(); err != nil {
			return nil, fmt.Errorf("certs: issue %q: %w", tmpl.Subject.CommonName, err)
		}
		pub = &key.PublicKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, Key: key, Chain: ca.issuerChain()}, nil
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: der}), nil
}

// LoadCA reads a CA from PEM files: certFile holds the CA certificate first,
// then optionally its intermediates and root; keyFile its private key. When
// the root is not in certFile, rootFile (optional) names it.
func LoadCA(certFile, keyFile, rootFile string) (*CA, error) {
	certData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	certsIn, err := ParseCertificatesPEM(certData)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA %s: %w", certFile, err)
	}
	keyData, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	key, err := ParsePrivateKeyPEM(keyData)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA key %s: %w", keyFile, err)
	}
	ca := &CA{Cert: certsIn[0], Key: key}
	for _, c := range certsIn[1:] {
		if isSelfSigned(c) {
			ca.Root = c
		} else {
			ca.Chain = append(ca.Chain, c)
		}
	}
	if isSelfSigned(ca.Cert) {
		ca.Root = ca.Cert
	}
	if ca.Root == nil && rootFile != "" {
		rootData, err := os.ReadFile(rootFile)
		if err != nil {
			return nil, fmt.Errorf("certs: load CA root: %w", err)
		}
		roots, err := ParseCertificatesPEM(rootData)
		if err != nil {
			return nil, fmt.Errorf("certs: load CA root %s: %w", rootFile, err)
		}
		ca.Root = roots[0]
	}
	if err := ca.check(); err != nil {
		return nil, fmt.Errorf("%w (%s, %s)", err, certFile, keyFile)
	}
	return ca, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.IsCA && c.CheckSignatureFrom(c) == nil
}
