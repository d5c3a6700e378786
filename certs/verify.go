package certs

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Sentinel errors of parsing and validation, for errors.Is.
var (
	// ErrBadPEM: the input holds no PEM block of the wanted kind, or the DER inside does not parse.
	ErrBadPEM = errors.New("bad PEM")
	// ErrKeyType: a key that is not ECDSA P-256 (or P-384 for CAs).
	ErrKeyType = errors.New("unsupported key type")
	// ErrExpired: a certificate's NotAfter is in the past.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: a certificate's NotBefore is in the future.
	ErrNotYetValid = errors.New("certificate not yet valid")
	// ErrChain: the certificate does not chain to a trusted root.
	ErrChain = errors.New("certificate chain does not verify")
	// ErrKeyUsage: key usage or extended key usage unfit for the role.
	ErrKeyUsage = errors.New("wrong key usage")
	// ErrOCFProfile: the certificate breaks the OCF identity certificate profile.
	ErrOCFProfile = errors.New("not an OCF identity certificate")
)

// ParseCertificatesPEM returns every CERTIFICATE block in data, in order.
// Other blocks (keys, parameters) are skipped; no certificate at all, or one
// that does not parse, is ErrBadPEM.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	sawBlock := false
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawBlock = true
		if block.Type != pemCert {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w: %w", len(out)+1, ErrBadPEM, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		if !sawBlock {
			return nil, fmt.Errorf("%w: no PEM data (want -----BEGIN CERTIFICATE-----)", ErrBadPEM)
		}
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrBadPEM)
	}
	return out, nil
}

// ParsePrivateKeyPEM reads an ECDSA private key from PEM: PKCS#8
// ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY", what openssl ecparam writes).
// RSA and Ed25519 keys are ErrKeyType; so are curves other than P-256/P-384.
func ParsePrivateKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: no PRIVATE KEY or EC PRIVATE KEY block", ErrBadPEM)
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: PKCS#8 key: %w", ErrBadPEM, err)
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("%w: key is %s, want ECDSA P-256", ErrKeyType, keyKind(k))
			}
			if err := checkCurve(ec.Curve); err != nil {
				return nil, err
			}
			return ec, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil && strings.Contains(err.Error(), "unknown elliptic curve") {
				return nil, fmt.Errorf("%w: EC key on a curve other than P-256/P-384: %w", ErrKeyType, err)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: EC key: %w", ErrBadPEM, err)
			}
			if err := checkCurve(k.Curve); err != nil {
				return nil, err
			}
			return k, nil
		case "RSA PRIVATE KEY":
			return nil, fmt.Errorf("%w: key is RSA, want ECDSA P-256", ErrKeyType)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)", ErrBadPEM)
		}
	}
}

func checkCurve(c elliptic.Curve) error {
	if c != elliptic.P256() && c != elliptic.P384() {
		return fmt.Errorf("%w: curve %s, want P-256 or P-384", ErrKeyType, c.Params().Name)
	}
	return nil
}

func keyKind(k any) string {
	switch k.(type) {
	case *rsa.PrivateKey:
		return "RSA"
	case ed25519.PrivateKey:
		return "Ed25519"
	case *ecdh.PrivateKey:
		return "X25519"
	}
	return fmt.Sprintf("%T", k)
}

// Profile is the role a certificate is checked for.
type Profile string

// Profiles Verify knows.
const (
	ProfileCA      Profile = "ca"      // a root or intermediate CA
	ProfileGateway Profile = "gateway" // coaps+tcp server: OCF end-entity, CN uuid:<sid>, SANs
	ProfileHTTP    Profile = "http"    // HTTPS server: serverAuth, SANs
	ProfileDevice  Profile = "device"  // OCF identity certificate: CN uuid:<di>
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	Profile Profile
	// Roots are the trust anchors; when empty the chain is not checked
	// (profile and validity only).
	Roots         []*x509.Certificate
	Intermediates []*x509.Certificate
	DNSName       string // for server profiles: a name or IP the certificate must cover
	ID            string // for OCF profiles: the expected uuid (cloud id or device id)
	Now           time.Time
}

// Verify checks a certificate for its role and reports every problem found,
// joined, each wrapping one of the sentinel errors: validity
// (ErrExpired, ErrNotYetValid), chain (ErrChain), usages (ErrKeyUsage), key
// type (ErrKeyType) and the OCF profile (ErrOCFProfile).
func Verify(c *x509.Certificate, o VerifyOptions) error {
	if c == nil {
		return fmt.Errorf("%w: no certificate", ErrBadPEM)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	var errs []error
	add := func(sentinel error, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...)))
	}
	if now.After(c.NotAfter) {
		add(ErrExpired, "expired %s ago, at %s", now.Sub(c.NotAfter).Round(time.Second), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		add(ErrNotYetValid, "valid only from %s, %s from now (check the clock)", c.NotBefore.UTC().Format(time.RFC3339), c.NotBefore.Sub(now).Round(time.Second))
	}

	switch o.Profile {
	case ProfileCA:
		if !c.BasicConstraintsValid || !c.IsCA {
			add(ErrKeyUsage, "basic constraints do not say CA:TRUE")
		}
		if c.KeyUsage&x509.KeyUsageCertSign == 0 {
			add(ErrKeyUsage, "key usage lacks keyCertSign")
		}
		if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
			add(ErrKeyType, "public key is %s, want ECDSA", c.PublicKeyAlgorithm)
		} else if err := checkCurve(pub.Curve); err != nil {
			errs = append(errs, err)
		}
	case ProfileHTTP:
		checkServerLeaf(c, add)
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
			add(ErrKeyUsage, "extended key usage lacks serverAuth")
		}
		if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok && c.PublicKeyAlgorithm != x509.RSA {
			add(ErrKeyType, "public key is %s", c.PublicKeyAlgorithm)
		}
	case ProfileGateway, ProfileDevice:
		checkOCFLeaf(c, o.ID, add)
		if o.Profile == ProfileGateway {
			checkServerLeaf(c, add)
		}
	case "":
	default:
		add(ErrKeyUsage, "unknown profile %q (want ca, gateway, http or device)", o.Profile)
	}

	if o.DNSName != "" {
		if err := c.VerifyHostname(strings.Trim(o.DNSName, "[]")); err != nil {
			add(ErrKeyUsage, "%v", err)
		}
	}

	if len(o.Roots) > 0 {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, r := range o.Roots {
			roots.AddCert(r)
		}
		for _, i := range o.Intermediates {
			inter.AddCert(i)
		}
		eku := []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
		switch o.Profile {
		case ProfileHTTP, ProfileGateway:
			eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		case ProfileDevice:
			eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		// The leaf's own validity is reported above; check the chain at a
		// time the leaf is valid, so an expired leaf is one error, not two.
		at := now
		if at.After(c.NotAfter) || at.Before(c.NotBefore) {
			at = c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
		}
		for _, ch := range append(slices.Clone(o.Intermediates), o.Roots...) {
			if now.After(ch.NotAfter) {
				add(ErrExpired, "issuer %q expired at %s", ch.Subject.CommonName, ch.NotAfter.UTC().Format(time.RFC3339))
			}
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: eku}); err != nil {
			add(ErrChain, "%v", err)
		}
	}
	return errors.Join(errs...)
}

func checkServerLeaf(c *x509.Certificate, add func(error, string, ...any)) {
	if c.IsCA {
		add(ErrKeyUsage, "a CA certificate cannot be a server certificate")
	}
	if len(c.DNSNames) == 0 && len(c.IPAddresses) == 0 {
		add(ErrKeyUsage, "no DNS or IP subject alternative names (clients ignore the CN)")
	}
}

// checkOCFLeaf checks the OCF end-entity profile: CN "uuid:<uuid>", ECDSA
// P-256 key, ecdsa-with-SHA256, not a CA, key usage digitalSignature and
// keyAgreement, extended key usage serverAuth and clientAuth.
func checkOCFLeaf(c *x509.Certificate, wantID string, add func(error, string, ...any)) {
	id, err := DeviceIDFromCert(c)
	switch {
	case err != nil:
		add(ErrOCFProfile, "subject CN %q is not \"uuid:<uuid>\"", c.Subject.CommonName)
	case wantID != "" && !strings.EqualFold(id, wantID):
		add(ErrOCFProfile, "subject names %s, want %s", id, wantID)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		add(ErrKeyType, "public key is %s, OCF requires ECDSA P-256", c.PublicKeyAlgorithm)
	} else if pub.Curve != elliptic.P256() {
		add(ErrKeyType, "public key curve is %s, OCF requires P-256", pub.Curve.Params().Name)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		add(ErrOCFProfile, "signature algorithm %s, OCF requires ECDSA-SHA256", c.SignatureAlgorithm)
	}
	if c.IsCA {
		add(ErrOCFProfile, "basic constraints say CA:TRUE on an end-entity certificate")
	}
	for _, u := range []struct {
		bit  x509.KeyUsage
		name string
	}{{x509.KeyUsageDigitalSignature, "digitalSignature"}, {x509.KeyUsageKeyAgreement, "keyAgreement"}} {
		if c.KeyUsage&u.bit == 0 {
			add(ErrKeyUsage, "key usage lacks %s", u.name)
		}
	}
	if c.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		add(ErrKeyUsage, "key usage has keyCertSign or cRLSign on an end-entity certificate")
	}
	for _, u := range []struct {
		eku  x509.ExtKeyUsage
		name string
	}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
		if !slices.Contains(c.ExtKeyUsage, u.eku) {
			add(ErrKeyUsage, "extended key usage lacks %s (OCF requires serverAuth and clientAuth)", u.name)
		}
	}
}

// VerifyPEM is Verify for PEM input: certPEM holds the leaf and optionally
// intermediates after it; rootsPEM the trust anchors (optional).
func VerifyPEM(certPEM, rootsPEM []byte, o VerifyOptions) error {
	chain, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return err
	}
	o.Intermediates = append(o.Intermediates, chain[1:]...)
	if len(rootsPEM) > 0 {
		roots, err := ParseCertificatesPEM(rootsPEM)
		if err != nil {
			return fmt.Errorf("roots: %w", err)
		}
		o.Roots = append(o.Roots, roots...)
	}
	return Verify(chain[0], o)
}
