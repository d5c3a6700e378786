package devicesim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// IdentityIssuer issues OCF identity certificates (subject CN
// "uuid:<di>", ECDSA P-256) from a device CA, as a manufacturer does before
// devices ship. The simulator uses it to give every simulated device its own
// certificate for coaps+tcp.
type IdentityIssuer struct {
	CA  *x509.Certificate
	Key crypto.Signer
	// Validity of issued certificates; default 24 h.
	Validity time.Duration
}

// LoadIdentityIssuer reads a CA certificate and its private key (PKCS#8, EC
// or PKCS#1 PEM), e.g. ca.pem and ca.key of the cloud's dev PKI.
func LoadIdentityIssuer(certFile, keyFile string) (*IdentityIssuer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("identity CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("identity CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("identity CA %s / %s: %w", certFile, keyFile, err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("identity CA: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("identity CA key cannot sign")
	}
	return &IdentityIssuer{CA: ca, Key: signer}, nil
}

// Issue creates a key pair and an identity certificate for deviceID.
func (i *IdentityIssuer) Issue(deviceID string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	validity := i.Validity
	if validity <= 0 {
		validity = 24 * time.Hour
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(i.CA.NotAfter) {
		notAfter = i.CA.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "uuid:" + deviceID},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.CA, &key.PublicKey, i.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue identity for %s: %w", deviceID, err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// IdentityPEM returns cert as PEM certificate and PKCS#8 key, for devices
// that read files.
func IdentityPEM(cert tls.Certificate) (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
